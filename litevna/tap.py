"""twistd plugin glue: ``twistd -n litevna [options]`` (and ``litevna serve``)."""

from twisted.python import usage

from litevna.config import OPTIONS, Config, ConfigError, env_default


class Options(usage.Options):
    optParameters = [[name, None, None, f"{text} [default: {default}]"]
                     for name, default, text in OPTIONS]

    def postOptions(self):
        values = {name: self[name] if self[name] is not None else env_default(name, None)
                  for name, _, _ in OPTIONS}
        try:
            self.config = Config.from_options(values)
        except ConfigError as exc:
            raise usage.UsageError(str(exc)) from None


def makeService(options):
    from twisted.internet import reactor

    from litevna.service import make_service

    return make_service(options.config, reactor)
