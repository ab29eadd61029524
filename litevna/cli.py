"""The ``litevna`` command: serve, admin, doctor, upload."""

import argparse
import dataclasses
import getpass
import json
import sys
import time

from litevna.config import OPTIONS, Config, ConfigError, env_default

_BACKEND_OPTIONS = ("data-dir", "database", "redis")


def _add_options(parser, names):
    for name, default, text in OPTIONS:
        if name in names:
            parser.add_argument(f"--{name}", default=None, help=f"{text} [default: {default}]")


def _config(args):
    values = {name: getattr(args, name.replace("-", "_"), None) for name, _, _ in OPTIONS}
    values = {name: value if value is not None else env_default(name, None)
              for name, value in values.items()}
    return Config.from_options(values)


def serve(args):
    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall
    from twisted.logger import globalLogBeginner

    from litevna.logs import BatchedFile, observer_for
    from litevna.service import make_service

    config = _config(args)
    if args.worker is not None:
        config = dataclasses.replace(config, worker=args.worker)
    out = BatchedFile(sys.stdout)
    globalLogBeginner.beginLoggingTo([observer_for(config.log_format, out)],
                                     redirectStandardIO=False)
    top = make_service(config, reactor, inherit_fd=args.inherit_fd)
    flusher = LoopingCall(out.flush_now)
    reactor.callWhenRunning(top.startService)
    reactor.callWhenRunning(flusher.start, 0.5)
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.addSystemEventTrigger("after", "shutdown", out.flush_now)
    reactor.run()
    return 0


def _accounts(args):
    from litevna.accounts import Accounts
    from litevna.service import open_backends

    index, keyring = open_backends(_config(args))
    return Accounts(index, keyring, time.time)


def admin(args):
    from litevna.accounts import parse_permissions

    accounts = _accounts(args)
    if args.action == "create-account":
        password = sys.stdin.readline().rstrip("\n") if args.password_stdin \
            else getpass.getpass("Password: ")
        account_id = accounts.create_account(args.email, password)
        print(json.dumps({"id": account_id, "email": args.email.strip().lower()}))
    elif args.action == "create-store":
        accounts.create_store(args.label, args.owner)
        print(json.dumps({"label": args.label, "owner": args.owner.strip().lower()}))
    elif args.action == "create-api-key":
        key = accounts.create_api_key(args.label, args.name,
                                      parse_permissions(args.permissions), args.expires_in)
        print(json.dumps(key))
    elif args.action == "revoke-api-key":
        accounts.revoke_api_key(args.label, args.id)
        print(json.dumps({"id": args.id, "revoked": True}))
    elif args.action == "list-stores":
        print(json.dumps(accounts.list_stores()))
    return 0


def doctor(args):
    import numpy
    import pydicom

    from litevna.render import kernel

    print(f"python      {sys.version.split()[0]}")
    print(f"pydicom     {pydicom.__version__}, numpy {numpy.__version__}")
    print("kernels     " + ("compiled (Cython extension litevna._render)" if
                            kernel.compiled_active() else "numpy fallback (no compiled extension)"))
    try:
        config = _config(args)
    except ConfigError as exc:
        print(f"config      invalid: {exc}")
        return 1
    print(f"data dir    {config.data_dir}")
    print(f"index       {config.database}")
    return 0


def upload(args):
    from litevna.upload import command

    return command(args)


def _add_upload_parser(commands):
    p = commands.add_parser(
        "upload", help="send DICOM files and folders to a store (STOW-RS)",
        description="Send DICOM Part 10 files (folders are walked, hidden entries skipped) to "
                    "a store. Exit code: 0 all sent, 1 some failed, 2 usage, 3 credentials "
                    "refused.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="a file or a folder")
    p.add_argument("--url", help="the store's DICOMweb root, e.g. "
                                 "http://127.0.0.1:8080/LABEL/dicomweb [env LITEVNA_URL]")
    p.add_argument("--token", help="API key value or token [env LITEVNA_TOKEN]")
    p.add_argument("--token-file", help="read the token from this file")
    p.add_argument("--batch-files", type=int, default=50, help="files per request [50]")
    p.add_argument("--batch-mb", type=float, default=64, help="MB (10^6) per request [64]")
    p.add_argument("--concurrency", type=int, default=4, help="parallel connections [4]")
    p.add_argument("--presigned-over", default="256MiB",
                   help="send larger files through upload-url and a gzip PUT [256MiB]")
    p.add_argument("--retries", type=int, default=3,
                   help="attempts after a transient failure, 0.5 s, 1 s, 2 s … apart [3]")
    p.add_argument("--timeout", type=float, default=300, help="socket timeout, seconds [300]")
    p.add_argument("--skip-non-dicom", action="store_true",
                   help="count files without DICM at offset 128 as skipped, not failed")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(run=upload)


def parser():
    top = argparse.ArgumentParser(prog="litevna", description="LiteVNA DICOMweb image store")
    commands = top.add_subparsers(dest="command", required=True)

    serve_parser = commands.add_parser("serve", help="run the server")
    _add_options(serve_parser, [name for name, _, _ in OPTIONS])
    # Set by the --workers supervisor for its children; not for people.
    serve_parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    serve_parser.add_argument("--inherit-fd", type=int, default=None, help=argparse.SUPPRESS)
    serve_parser.set_defaults(run=serve)

    doctor_parser = commands.add_parser("doctor", help="report the active kernel path and config")
    _add_options(doctor_parser, _BACKEND_OPTIONS)
    doctor_parser.set_defaults(run=doctor)

    admin_parser = commands.add_parser("admin", help="manage accounts, stores and API keys")
    actions = admin_parser.add_subparsers(dest="action", required=True)
    p = actions.add_parser("create-account")
    p.add_argument("email")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p = actions.add_parser("create-store")
    p.add_argument("label")
    p.add_argument("--owner", required=True)
    p = actions.add_parser("create-api-key")
    p.add_argument("label")
    p.add_argument("--name", default="")
    p.add_argument("--permissions", default="read,write,delete")
    p.add_argument("--expires-in", type=int, default=None, metavar="SECONDS")
    p = actions.add_parser("revoke-api-key")
    p.add_argument("label")
    p.add_argument("id")
    actions.add_parser("list-stores")
    for action in actions.choices.values():
        _add_options(action, _BACKEND_OPTIONS)
    admin_parser.set_defaults(run=admin)

    _add_upload_parser(commands)
    return top


def main(argv=None):
    from litevna.accounts import AccountError
    from litevna.index import Conflict

    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (AccountError, Conflict, ConfigError) as exc:
        print(f"litevna: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
