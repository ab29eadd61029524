"""The command line: admin JSON output, errors, doctor, options and the twistd plugin."""

import json
import subprocess
import sys

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

from litevna.config import Config, ConfigError, parse_size
from litevna.tap import Options


def litevna(*args, stdin=None, env=None):
    import os

    return subprocess.run([sys.executable, "-m", "litevna", *args], input=stdin,
                          capture_output=True, text=True, env=dict(os.environ, **(env or {})))


class AdminTests(SynchronousTestCase):
    def test_key_lifecycle(self):
        data = self.mktemp()
        created = litevna("admin", "create-account", "Op@Example.org", "--password-stdin",
                          "--data-dir", data, stdin="a long password\n")
        self.assertEqual(created.returncode, 0, created.stderr)
        self.assertEqual(litevna("admin", "create-store", "ct-lab", "--owner", "op@example.org",
                                 "--data-dir", data).returncode, 0)
        out = litevna("admin", "create-api-key", "ct-lab", "--name", "bridge", "--permissions",
                      "read,write", "--expires-in", "3600", "--data-dir", data)
        key = json.loads(out.stdout)
        self.assertEqual(set(key), {"id", "value", "permissions", "expiresAt"})
        self.assertEqual(key["permissions"], ["read", "write"])
        self.assertTrue(key["value"].startswith("eyJ"))
        self.assertIsInstance(key["expiresAt"], int)
        stores = json.loads(litevna("admin", "list-stores", "--data-dir", data).stdout)
        self.assertEqual([s["label"] for s in stores], ["ct-lab"])
        revoked = litevna("admin", "revoke-api-key", "ct-lab", key["id"], "--data-dir", data)
        self.assertEqual(revoked.returncode, 0, revoked.stderr)

    def test_errors_go_to_stderr(self):
        data = self.mktemp()
        for args in (("create-store", "ct-lab", "--owner", "nobody@example.org"),
                     ("create-api-key", "nosuch"),
                     ("revoke-api-key", "nosuch", "id")):
            result = litevna("admin", *args, "--data-dir", data)
            self.assertNotEqual(result.returncode, 0)
            self.assertEqual(result.stdout, "")
            self.assertIn("litevna:", result.stderr)
            self.assertNotIn("Traceback", result.stderr)

    def test_environment_variable(self):
        data = self.mktemp()
        result = litevna("admin", "create-account", "e@example.org", "--password-stdin",
                         stdin="a long password\n", env={"LITEVNA_DATA_DIR": data})
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("e@example.org", litevna("admin", "create-store", "envlab", "--owner",
                                               "e@example.org", "--data-dir", data).stdout)

    def test_doctor(self):
        result = litevna("doctor", "--data-dir", self.mktemp())
        self.assertEqual(result.returncode, 0)
        self.assertIn("kernels", result.stdout)
        pure = litevna("doctor", "--data-dir", self.mktemp(), env={"LITEVNA_PURE": "1"})
        self.assertIn("numpy fallback", pure.stdout)


class OptionsTests(SynchronousTestCase):
    def test_defaults(self):
        options = Options()
        options.parseOptions([])
        config = options.config
        self.assertEqual(config.listen, "tcp:8080:interface=127.0.0.1")
        self.assertEqual(config.max_body, 512 * 1024 ** 2)
        self.assertEqual(config.max_upload, 20 * 1024 ** 3)
        self.assertEqual(config.on_duplicate, "reject")

    def test_invalid(self):
        from twisted.python.usage import UsageError

        for args in (["--on-duplicate", "merge"], ["--max-body", "lots"], ["--workers", "0"],
                     ["--workers", "2", "--listen", "unix:/tmp/x.sock"],
                     ["--log-format", "xml"]):
            options = Options()
            self.assertRaises(UsageError, options.parseOptions, args)

    def test_sizes(self):
        self.assertEqual(parse_size("1MiB"), 1 << 20)
        self.assertEqual(parse_size("1000"), 1000)
        self.assertEqual(parse_size("1.5 GB"), 1_500_000_000)
        self.assertRaises(ConfigError, parse_size, "12 parsecs")
        self.assertRaises(ConfigError, Config.from_options, {"database": "mysql://x"})
        self.assertEqual(Config.from_options({"database": "postgresql://x"}).database,
                         "postgresql://x")


class PluginTests(SynchronousTestCase):
    def test_twistd_finds_litevna(self):
        import twisted.plugins

        names = [p.tapname for p in getPlugins(IServiceMaker, twisted.plugins)]
        self.assertIn("litevna", names)

    def test_twistd_help(self):
        result = subprocess.run([sys.executable, "-m", "twisted", "litevna", "--help"],
                                capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("--max-body", result.stdout)


class UiAddressTests(SynchronousTestCase):
    def test_addresses(self):
        from litevna.service import ui_address

        self.assertEqual(ui_address("tcp:8080:interface=127.0.0.1"), "http://127.0.0.1:8080/")
        self.assertEqual(ui_address("tcp:port=9000:interface=0.0.0.0"), "http://127.0.0.1:9000/")
        self.assertEqual(ui_address("ssl:8443:privateKey=k.pem"), "https://127.0.0.1:8443/")
        self.assertEqual(ui_address("tcp6:8080:interface=\\:\\:1"), "http://[::1]:8080/")
