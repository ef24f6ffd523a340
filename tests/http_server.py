"""`rtrec serve` in a subprocess, for tests over real HTTP."""

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time

import httpx

from rtrec.redis_server import free_port

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Server:
    def __init__(self, data, workers=2, preexec=None, **env):
        """`preexec`: called in the server's process before it starts (e.g. to lower a resource limit)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "RTREC_DATA_DIR": str(data), "RTREC_API_TOKEN": TOKEN, **env}
        rtrec = os.path.join(os.path.dirname(sys.executable), "rtrec")
        # a file, not a pipe: a pipe nobody reads blocks every worker that logs once it is full
        log, self.log_path = tempfile.mkstemp(prefix="rtrec-serve-", suffix=".log")
        self.stopped = False
        self.proc = subprocess.Popen(
            [rtrec, "serve", "--port", str(self.port), "--workers", str(workers)],
            env=env,
            start_new_session=True,
            preexec_fn=preexec,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        os.close(log)
        deadline = time.time() + 90
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None, self.stderr()[-3000:]
            assert time.time() < deadline, "server did not start"
            time.sleep(0.3)

    def stderr(self) -> str:
        """What the server and its workers have logged so far."""
        with open(self.log_path, errors="replace") as log:
            return log.read()

    def kill(self, sig=signal.SIGTERM):
        """Stop the server (once); an AssertionError with its log when it had exited before it was asked to."""
        if self.stopped:
            return
        self.stopped = True
        exited = self.proc.poll()
        try:
            with contextlib.suppress(ProcessLookupError):  # its workers may outlive it
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
            log = self.stderr()
        finally:
            os.unlink(self.log_path)
        assert exited is None, f"the server had exited on its own (status {exited}):\n{log[-5000:]}"
