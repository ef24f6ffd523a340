"""`rtrec serve` in a subprocess, for tests over real HTTP."""

import os
import signal
import subprocess
import sys
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
        self.proc = subprocess.Popen(
            [rtrec, "serve", "--port", str(self.port), "--workers", str(workers)],
            env=env,
            start_new_session=True,
            preexec_fn=preexec,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + 90
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None, self.proc.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "server did not start"
            time.sleep(0.3)

    def kill(self, sig=signal.SIGTERM):
        os.killpg(self.proc.pid, sig)
        self.proc.wait(30)
