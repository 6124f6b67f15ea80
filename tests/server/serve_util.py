"""Starts `kvshare serve` on a free port for the end-to-end tests, and stops it."""
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))
SHARED = os.environ.get("KVSHARE_SHARED_DIR", os.path.join(SOURCE, "..", "shared"))
MODEL = os.path.join(SHARED, "models", "tinystories-656k")
CHAT_TEMPLATE = os.path.join(HERE, "chatml.jinja")


def skip_without_model():
    """Exits as a skipped test (CTest's SKIP_REGULAR_EXPRESSION) when ../shared is absent."""
    if not os.path.isdir(MODEL):
        print("[  SKIPPED ] needs ../shared/models/tinystories-656k (the shared data folder is absent)")
        sys.exit(0)


def kvshare_bin():
    path = os.environ.get("KVSHARE_BIN", os.path.join(SOURCE, "build", "kvshare"))
    if not os.path.exists(path):
        sys.exit(f"kvshare binary not found at {path}: build first, or set KVSHARE_BIN")
    return path


class Server:
    """`kvshare serve --model MODEL --port 0 ...`; url is known once it prints its address."""

    def __init__(self, *flags, model=None, chat_template=True):
        # Defaults a test may override (a flag may be given only once); chat_template=False serves the model's own.
        defaults = {"--kv-cache-memory": "64MiB"}
        if chat_template:
            defaults["--chat-template"] = CHAT_TEMPLATE
        args = [kvshare_bin(), "serve", "--model", model or MODEL, "--port", "0"]
        for flag, value in defaults.items():
            if flag not in flags:
                args += [flag, value]
        args += flags
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
        self.log = []
        deadline = time.time() + 60
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("kvshare serve exited before serving:\n" + "".join(self.log))
            self.log.append(line)
            m = re.search(r"on (http://[\d.]+:\d+)", line)
            if m:
                self.url = m.group(1)
                return
        raise RuntimeError("kvshare serve did not start in 60 s:\n" + "".join(self.log))

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Sends `sig`, waits, returns the exit code and the rest of stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rest = self.proc.communicate(timeout=timeout)[1]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest = self.proc.communicate()[1]
            raise RuntimeError("kvshare serve did not stop within %d s after signal %d" % (timeout, sig))
        self.log.append(rest or "")
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *rest):
        code = self.stop()
        if exc_type is not None or code != 0:  # what the server said, for the failure's report (a sanitizer's, say)
            sys.stderr.write(f"kvshare serve exited with {code}; the end of its stderr:\n" + "".join(self.log)[-20000:])


@contextlib.contextmanager
def server_with_template(template, *flags, **kw):
    """A Server whose chat template (--chat-template) is `template`, a Jinja source written to a scratch file."""
    with tempfile.NamedTemporaryFile("w", suffix=".jinja") as f:
        f.write(template)
        f.flush()
        with Server("--chat-template", f.name, *flags, **kw) as s:
            yield s
