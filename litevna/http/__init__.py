"""HTTP plumbing below the routes: the streaming Site/Request, negotiation, errors."""
