"""The local stack: Bigtable and Pub/Sub emulators (and Varnish) for tests, the demo and development.

    python -m cliffhanger.localstack up [--detach] [--varnish-backend HOST:PORT]   # see __main__.py
    python -m cliffhanger.localstack status | down

In code and tests (tests/conftest.py has the fixtures):

    with LocalStack(Settings(bigtable_port=free_port(), pubsub_port=free_port())) as stack:
        stack.provision()      # everything declared in cliffhanger.resources, idempotently
        stack.apply_env()      # BIGTABLE_EMULATOR_HOST, PUBSUB_EMULATOR_HOST, CLIFFHANGER_* ports

Every failure (missing emulator, port taken, emulator died, readiness timeout) is a LocalStackError
whose message says what failed and what to do; nothing waits forever.
"""

from cliffhanger.localstack.process import LocalStackError, free_port
from cliffhanger.localstack.stack import SERVICES, LocalStack, settings_on_free_ports
from cliffhanger.localstack.varnish import DEFAULT_VCL, Varnish

__all__ = ["DEFAULT_VCL", "SERVICES", "LocalStack", "LocalStackError", "Varnish", "free_port", "settings_on_free_ports"]
