#!/usr/bin/env python3
"""dnah code interpreter: the HTTP server `@e2b/code-interpreter` talks to on port 49999.

Runs inside the sandbox, started (and restarted) by the guest agent from the template's
/etc/dnah/start.json. Python contexts are Jupyter kernels (ipykernel through jupyter_client);
JavaScript and TypeScript contexts are js-kernel.mjs processes on the agent's Node runtime.

  POST   /execute               {"code", "context_id"?, "language"?, "env_vars"?}
                                -> 200, newline-delimited JSON, streamed (see README.md)
  POST   /contexts              {"language"?, "cwd"?} -> {"id", "language", "cwd"}
  GET    /contexts              -> [{"id", "language", "cwd"}]
  DELETE /contexts/<id>         -> 204
  POST   /contexts/<id>/restart -> 204
  GET    /health                -> 200

Errors before a stream starts are plain text (400, 404, 413, 500), as the reference server's.
The port starts listening only once the default Python kernel is ready, so "the port accepts"
means "a sandbox can run code".
"""

import base64
import datetime
import json
import os
import queue
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("DNAH_CI_PORT", "49999"))
HOST = os.environ.get("DNAH_CI_HOST", "0.0.0.0")
DEFAULT_CWD = os.environ.get("HOME") or "/home/user"
HERE = os.path.dirname(os.path.abspath(__file__))
JS_KERNEL = os.path.join(HERE, "js-kernel.mjs")
NODE_RUNTIME = "/opt/dnah/node"

MAX_BODY_BYTES = 16 * 1024 * 1024
KEEPALIVE_S = 5.0
POLL_S = 0.2
KERNEL_START_TIMEOUT_S = 90.0
# After an interrupt, how long a cell may take to stop before its kernel is restarted.
INTERRUPT_GRACE_S = 10.0
MAX_CONTEXTS = 64

LANGUAGES = {
    None: "python",
    "": "python",
    "python": "python",
    "python3": "python",
    "py": "python",
    "javascript": "javascript",
    "js": "javascript",
    "typescript": "typescript",
    "ts": "typescript",
}

# Jupyter MIME types -> the keys the SDK's Result reads; other MIME types pass under their own
# name (the SDK files them under `result.extra`).
MIME_KEYS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
    "e2b/data": "data",
    "e2b/chart": "chart",
}

END = object()


def log(msg, **fields):
    record = {"time": now_iso(), "msg": msg}
    record.update(fields)
    sys.stderr.write(json.dumps(record, default=str) + "\n")
    sys.stderr.flush()


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


class HttpError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


# --- the sandbox env -------------------------------------------------------------------------


class SandboxEnv:
    """The sandbox-wide env as the agent's /init has set it by now.

    The agent hands the server a socket on fd $DNAH_ENV_FD: one line out, one JSON object back.
    Without it (the server run by hand) the env is empty.
    """

    def __init__(self):
        fd = os.environ.pop("DNAH_ENV_FD", None)
        self._sock = None
        self._lock = threading.Lock()
        self._last = {}
        if fd:
            try:
                os.set_inheritable(int(fd), False)
                self._sock = socket.socket(fileno=int(fd))
                self._sock.settimeout(5.0)
                self._reader = self._sock.makefile("rb")
            except OSError as err:
                log("no env channel", fd=fd, error=str(err))
                self._sock = None

    def get(self):
        if self._sock is None:
            return dict(self._last)
        with self._lock:
            try:
                self._sock.sendall(b"env\n")
                line = self._reader.readline(1024 * 1024)
                env = json.loads(line)
                if isinstance(env, dict):
                    self._last = {str(k): str(v) for k, v in env.items()}
            except (OSError, ValueError) as err:
                log("env channel failed; using the last env", error=str(err))
        return dict(self._last)


# --- kernels ---------------------------------------------------------------------------------


def result_message(data, is_main):
    msg = {"type": "result", "is_main_result": is_main}
    for mime, value in data.items():
        key = MIME_KEYS.get(mime, mime)
        if key == "text" and isinstance(value, str):
            value = strip_quotes(value)
        elif key in ("png", "jpeg") and isinstance(value, str):
            value = value.strip()
        elif key == "pdf" and isinstance(value, bytes):
            value = base64.b64encode(value).decode()
        msg[key] = value
    return msg


def strip_quotes(text):
    if len(text) >= 2 and text[0] == text[-1] and text[0] in ("'", '"'):
        return text[1:-1]
    return text


class PythonKernel:
    """An ipykernel process and its client; used only from its context's worker thread."""

    def __init__(self, cwd, env):
        from jupyter_client import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=cwd, env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=KERNEL_START_TIMEOUT_S)
        except Exception:
            self.shutdown()
            raise
        self.launch_env = dict(env)
        # What the kernel's os.environ holds, as far as this server has set it.
        self.env = dict(env)

    def execute(self, code, env_set, env_restore, out, cancel):
        if env_set:
            self.kc.execute(
                "__import__('os').environ.update(%r)" % (env_set,), silent=True, store_history=False
            )
        msg_id = self.kc.execute(code, store_history=True, allow_stdin=False, stop_on_error=False)
        interrupted_at = None
        errors = 0
        last_alive_check = time.monotonic()
        while True:
            if cancel.is_set() and interrupted_at is None:
                interrupted_at = time.monotonic()
                self.km.interrupt_kernel()
            if interrupted_at is not None and time.monotonic() - interrupted_at > INTERRUPT_GRACE_S:
                out.put({"type": "error", "name": "KernelRestarted",
                         "value": "the cell did not stop when interrupted; its kernel was restarted",
                         "traceback": ""})
                out.put({"type": "unexpected_end_of_execution"})
                self.restart()
                return
            if time.monotonic() - last_alive_check > 1.0:
                last_alive_check = time.monotonic()
                if not self.km.is_alive():
                    out.put({"type": "error", "name": "KernelDied",
                             "value": "the kernel died while running the cell; it was restarted",
                             "traceback": ""})
                    out.put({"type": "unexpected_end_of_execution"})
                    self.restart()
                    return
            try:
                msg = self.kc.get_iopub_msg(timeout=POLL_S)
            except queue.Empty:
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            content = msg["content"]
            if kind == "stream":
                out.put({"type": "stdout" if content.get("name") == "stdout" else "stderr",
                         "text": content.get("text", ""), "timestamp": now_iso()})
            elif kind == "execute_input":
                out.put({"type": "number_of_executions", "execution_count": content.get("execution_count")})
            elif kind in ("execute_result", "display_data", "update_display_data"):
                out.put(result_message(content.get("data", {}), kind == "execute_result"))
            elif kind == "error":
                errors += 1
                if errors == 1:
                    out.put({"type": "error", "name": content.get("ename", "Error"),
                             "value": content.get("evalue", ""),
                             "traceback": "\n".join(content.get("traceback", []))})
            elif kind == "status" and content.get("execution_state") == "idle":
                break
        if env_restore:
            sets = {k: v for k, v in env_restore.items() if v is not None}
            unsets = [k for k, v in env_restore.items() if v is None]
            self.kc.execute(
                "(lambda e: ([e.__setitem__(k, v) for k, v in %r.items()], [e.pop(k, None) for k in %r]))"
                "(__import__('os').environ)" % (sets, unsets),
                silent=True, store_history=False,
            )

    def restart(self):
        self.km.restart_kernel(now=True)
        self.kc.stop_channels()
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=KERNEL_START_TIMEOUT_S)
        self.env = dict(self.launch_env)  # the new kernel starts from the launch env

    def shutdown(self):
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=True)


def node_command():
    configured = os.environ.get("DNAH_NODE")
    if configured:
        return configured.split()
    loader = os.path.join(NODE_RUNTIME, "lib", "ld-linux-x86-64.so.2")
    if os.path.exists(loader):
        return [loader, "--library-path", os.path.join(NODE_RUNTIME, "lib"),
                os.path.join(NODE_RUNTIME, "bin", "node")]
    return [shutil.which("node") or "node"]


class JsKernel:
    """A js-kernel.mjs process; used only from its context's worker thread (readers aside)."""

    def __init__(self, language, cwd, env):
        self.language = language
        self.cwd = cwd
        self.env = dict(env)
        self.next_id = 0
        self.sink = None  # the running execution's queue, for raw output of child processes
        self.sink_lock = threading.Lock()
        self._start()

    def _start(self):
        if not os.path.exists(JS_KERNEL):
            raise RuntimeError("js-kernel.mjs is missing next to server.py")
        ours, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                node_command() + ["--no-warnings", JS_KERNEL, "--language", self.language,
                                  "--fd", str(theirs.fileno())],
                cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        finally:
            theirs.close()
        self.chan = ours
        self.pending = bytearray()  # bytes read from the channel past the last full line
        for pipe, kind in ((self.proc.stdout, "stdout"), (self.proc.stderr, "stderr")):
            threading.Thread(target=self._pump_raw, args=(pipe, kind), daemon=True).start()

    def _pump_raw(self, pipe, kind):
        while True:
            chunk = pipe.read1(65536) if hasattr(pipe, "read1") else pipe.read(65536)
            if not chunk:
                return
            text = chunk.decode("utf-8", "replace")
            with self.sink_lock:
                sink = self.sink
            if sink is not None:
                sink.put({"type": kind, "text": text, "timestamp": now_iso()})
            else:
                log("js kernel output outside a cell", stream=kind, text=text[:2000])

    def execute(self, code, env_set, env_restore, out, cancel):
        self.next_id += 1
        req_id = self.next_id
        # Output of timers and promises of earlier cells that nobody read: log it, so it does
        # not land in this cell.
        while True:
            stale = self._read_line(0)
            if stale is None:
                break
            log("js kernel output between cells", line=stale[:2000].decode("utf-8", "replace"))
        with self.sink_lock:
            self.sink = out
        try:
            self.chan.sendall((json.dumps({"id": req_id, "code": code, "env": env_set,
                                           "restore": env_restore}) + "\n").encode())
            interrupted_at = None
            errors = 0
            while True:
                if cancel.is_set() and interrupted_at is None:
                    interrupted_at = time.monotonic()
                    self.proc.send_signal(signal.SIGINT)
                if interrupted_at is not None and time.monotonic() - interrupted_at > INTERRUPT_GRACE_S:
                    out.put({"type": "error", "name": "KernelRestarted",
                             "value": "the cell did not stop when interrupted; its kernel was restarted",
                             "traceback": ""})
                    out.put({"type": "unexpected_end_of_execution"})
                    self.restart()
                    return
                line = self._read_line(POLL_S)
                if line is None:
                    if self.proc.poll() is not None:
                        out.put({"type": "error", "name": "KernelDied",
                                 "value": "the kernel exited with %s; it was restarted" % self.proc.returncode,
                                 "traceback": ""})
                        out.put({"type": "unexpected_end_of_execution"})
                        self.restart()
                        return
                    continue
                msg = json.loads(line)
                if msg.get("id") not in (req_id, None):
                    continue
                kind = msg.pop("type", None)
                msg.pop("id", None)
                if kind == "end":
                    return
                if kind in ("stdout", "stderr"):
                    out.put({"type": kind, "text": msg.get("text", ""), "timestamp": now_iso()})
                elif kind == "error":
                    errors += 1
                    if errors == 1:
                        out.put({"type": "error", "name": msg.get("name", "Error"),
                                 "value": msg.get("value", ""), "traceback": msg.get("traceback", "")})
                elif kind in ("result", "number_of_executions"):
                    msg["type"] = kind
                    out.put(msg)
        finally:
            with self.sink_lock:
                self.sink = None

    def _read_line(self, timeout):
        """The next line from the kernel, or None when none arrives within `timeout`."""
        while True:
            nl = self.pending.find(b"\n")
            if nl >= 0:
                line = bytes(self.pending[:nl])
                del self.pending[: nl + 1]
                return line
            ready, _, _ = select.select([self.chan], [], [], timeout)
            if not ready:
                return None
            chunk = self.chan.recv(1 << 16)
            if not chunk:  # the kernel closed the channel: it is exiting
                self.proc.wait(timeout=5)
                return None
            self.pending += chunk

    def restart(self):
        self.shutdown()
        self._start()  # with self.env: the env the old kernel had between cells

    def shutdown(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.chan.close()


# --- contexts --------------------------------------------------------------------------------


class Context:
    """A kernel and the worker thread that owns it: jobs (executions, restarts) run in order."""

    def __init__(self, language, cwd, sandbox_env):
        self.id = str(uuid.uuid4())
        self.language = language
        self.cwd = cwd
        self._sandbox_env = sandbox_env
        self._jobs = queue.Queue()
        self._current_cancel = None
        self._started = threading.Event()
        self._start_error = None
        self.kernel = None
        threading.Thread(target=self._work, name="context-" + self.id[:8], daemon=True).start()

    def describe(self):
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    def wait_started(self):
        if not self._started.wait(KERNEL_START_TIMEOUT_S + 10):
            raise HttpError(500, "the %s kernel did not start in time" % self.language)
        if self._start_error is not None:
            raise HttpError(500, "the %s kernel failed to start: %s" % (self.language, self._start_error))

    def _kernel_env(self):
        env = dict(os.environ)
        # debugpy (an ipykernel dependency) warns about frozen modules at every kernel start.
        env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
        env.update(self._sandbox_env.get())
        return env

    def _work(self):
        try:
            env = self._kernel_env()
            if self.language == "python":
                self.kernel = PythonKernel(self.cwd, env)
            else:
                self.kernel = JsKernel(self.language, self.cwd, env)
        except Exception as err:  # reported to whoever waits for the start
            self._start_error = err
            log("kernel failed to start", context=self.id, language=self.language, error=repr(err))
            self._started.set()
            return
        self._started.set()
        while True:
            job = self._jobs.get()
            if job is None:
                try:
                    self.kernel.shutdown()
                except Exception as err:
                    log("kernel shutdown failed", context=self.id, error=repr(err))
                return
            job()

    def execute(self, code, env_vars, out, cancel):
        def job():
            if cancel.is_set():
                out.put(END)
                return
            self._current_cancel = cancel
            try:
                # The sandbox env may have changed since the kernel started (a warm sandbox
                # claimed with env vars): bring the kernel up to date, then add the cell's vars.
                sandbox_env = self._sandbox_env.get()
                wanted = dict(sandbox_env)
                wanted.update(env_vars)
                env_set = {k: v for k, v in wanted.items() if self.kernel.env.get(k) != v}
                env_restore = {k: sandbox_env.get(k) for k in env_vars}
                self.kernel.env.update(sandbox_env)
                self.kernel.execute(code, env_set, env_restore, out, cancel)
            except Exception as err:
                log("execution failed", context=self.id, error=repr(err))
                out.put({"type": "error", "name": type(err).__name__, "value": str(err), "traceback": ""})
                out.put({"type": "unexpected_end_of_execution"})
            finally:
                self._current_cancel = None
                out.put(END)

        self._jobs.put(job)

    def restart(self):
        done = threading.Event()
        failure = []

        def job():
            try:
                self.kernel.restart()
            except Exception as err:
                failure.append(err)
            finally:
                done.set()

        self.cancel_current()
        self._jobs.put(job)
        if not done.wait(KERNEL_START_TIMEOUT_S + INTERRUPT_GRACE_S + 10):
            raise HttpError(500, "restarting the kernel timed out")
        if failure:
            raise HttpError(500, "restarting the kernel failed: %s" % failure[0])

    def cancel_current(self):
        cancel = self._current_cancel
        if cancel is not None:
            cancel.set()

    def close(self):
        self.cancel_current()
        self._jobs.put(None)


class Contexts:
    def __init__(self, sandbox_env):
        self._sandbox_env = sandbox_env
        self._lock = threading.Lock()
        self._all = {}
        self._defaults = {}

    def create(self, language, cwd):
        with self._lock:
            if len(self._all) >= MAX_CONTEXTS:
                raise HttpError(400, "too many contexts (%d); remove some first" % MAX_CONTEXTS)
            ctx = Context(language, cwd, self._sandbox_env)
            self._all[ctx.id] = ctx
        try:
            ctx.wait_started()
        except HttpError:
            self.remove(ctx.id)
            raise
        return ctx

    def default(self, language):
        with self._lock:
            ctx = self._defaults.get(language)
            if ctx is None or ctx.id not in self._all:
                ctx = Context(language, DEFAULT_CWD, self._sandbox_env)
                self._all[ctx.id] = ctx
                self._defaults[language] = ctx
        ctx.wait_started()
        return ctx

    def get(self, context_id):
        with self._lock:
            ctx = self._all.get(context_id)
        if ctx is None:
            raise HttpError(404, "Context %s not found" % context_id)
        ctx.wait_started()
        return ctx

    def list(self):
        with self._lock:
            return [c.describe() for c in self._all.values()]

    def remove(self, context_id):
        with self._lock:
            ctx = self._all.pop(context_id, None)
            for lang, d in list(self._defaults.items()):
                if d is ctx:
                    del self._defaults[lang]
        if ctx is None:
            raise HttpError(404, "Context %s not found" % context_id)
        ctx.close()


# --- HTTP ------------------------------------------------------------------------------------


def language_of(value):
    if value is not None and not isinstance(value, str):
        raise HttpError(400, "language must be a string")
    key = value.strip().lower() if isinstance(value, str) else value
    if key not in LANGUAGES:
        raise HttpError(400, "Unsupported language '%s' (python, javascript, typescript)" % value)
    return LANGUAGES[key]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dnah-code-interpreter"
    contexts = None  # set in main()

    def log_message(self, fmt, *args):  # one JSON line per request instead of Apache style
        pass

    # routing

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def do_DELETE(self):
        self._route("DELETE")

    def _route(self, method):
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        try:
            if method == "POST" and parts == ["execute"]:
                self._execute()
            elif method == "GET" and parts == ["health"]:
                self._discard_body()
                self._send_text(200, "OK")
            elif parts == ["contexts"] and method == "POST":
                self._create_context()
            elif parts == ["contexts"] and method == "GET":
                self._discard_body()
                self._send_json(200, self.contexts.list())
            elif len(parts) == 2 and parts[0] == "contexts" and method == "DELETE":
                self._discard_body()
                self.contexts.remove(parts[1])
                self._send_empty(204)
            elif len(parts) == 3 and parts[0] == "contexts" and parts[2] == "restart" and method == "POST":
                self._discard_body()
                self.contexts.get(parts[1]).restart()
                self._send_empty(204)
            else:
                self._discard_body()
                raise HttpError(404, "Not found: %s %s" % (method, path))
        except HttpError as err:
            self._send_text(err.status, err.message)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as err:
            log("request failed", method=method, path=path, error=repr(err))
            self._send_text(500, "internal error: %s" % type(err).__name__)

    # bodies

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size_line = self.rfile.readline(64)
                try:
                    size = int(size_line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise HttpError(400, "malformed chunked body")
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                if len(data) + size > MAX_BODY_BYTES:
                    self.close_connection = True
                    raise HttpError(413, "request body larger than %d bytes" % MAX_BODY_BYTES)
                data += self.rfile.read(size)
                self.rfile.readline(8)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise HttpError(400, "bad Content-Length")
        if n > MAX_BODY_BYTES:
            self.close_connection = True
            raise HttpError(413, "request body larger than %d bytes" % MAX_BODY_BYTES)
        return self.rfile.read(n)

    def _discard_body(self):
        if self.headers.get("Content-Length") or self.headers.get("Transfer-Encoding"):
            self._read_body()

    def _json_body(self):
        raw = self._read_body()
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise HttpError(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            raise HttpError(400, "request body must be a JSON object")
        return body

    # responses

    def _send_text(self, status, text):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_json(self, status, value):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_empty(self, status):
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    # routes

    def _create_context(self):
        body = self._json_body()
        language = language_of(body.get("language"))
        cwd = body.get("cwd") or DEFAULT_CWD
        if not isinstance(cwd, str) or not cwd.startswith("/"):
            raise HttpError(400, "cwd must be an absolute path")
        if not os.path.isdir(cwd):
            raise HttpError(400, "cwd '%s' does not exist" % cwd)
        ctx = self.contexts.create(language, cwd)
        log("context created", context=ctx.id, language=language, cwd=cwd)
        self._send_json(200, ctx.describe())

    def _execute(self):
        body = self._json_body()
        code = body.get("code")
        if not isinstance(code, str):
            raise HttpError(400, "code must be a string")
        context_id = body.get("context_id")
        language = body.get("language")
        if context_id and language:
            raise HttpError(400, "Only one of context_id or language can be provided")
        env_vars = body.get("env_vars") or {}
        if not isinstance(env_vars, dict) or not all(
            isinstance(k, str) and k and "=" not in k and "\0" not in k and isinstance(v, str) and "\0" not in v
            for k, v in env_vars.items()
        ):
            raise HttpError(400, "env_vars must be an object of strings")
        if context_id:
            if not isinstance(context_id, str):
                raise HttpError(400, "context_id must be a string")
            ctx = self.contexts.get(context_id)
        else:
            ctx = self.contexts.default(language_of(language))

        out = queue.Queue()
        cancel = threading.Event()
        ctx.execute(code, env_vars, out, cancel)

        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.flush()
        last_write = time.monotonic()
        try:
            while True:
                try:
                    msg = out.get(timeout=POLL_S)
                except queue.Empty:
                    msg = None
                if msg is END:
                    self._chunk({"type": "end_of_execution"})
                    self.wfile.write(b"0\r\n\r\n")
                    return
                if msg is not None:
                    self._chunk(msg)
                    last_write = time.monotonic()
                elif time.monotonic() - last_write >= KEEPALIVE_S:
                    self._chunk({"type": "keepalive"})
                    last_write = time.monotonic()
                if self._client_gone():
                    raise ConnectionResetError("client went away")
        except (BrokenPipeError, ConnectionResetError, OSError):
            # The client timed out or went away: stop the cell, as a notebook's interrupt does.
            cancel.set()
            self.close_connection = True
            log("client went away; cell interrupted", context=ctx.id)

    def _chunk(self, msg):
        data = (json.dumps(msg) + "\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _client_gone(self):
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    sandbox_env = SandboxEnv()
    contexts = Contexts(sandbox_env)
    Handler.contexts = contexts
    started = time.monotonic()
    try:
        contexts.default("python")
    except HttpError as err:
        log("the default python kernel did not start; exiting", error=err.message)
        sys.exit(1)
    server = Server((HOST, PORT), Handler)
    log("code interpreter listening", port=PORT, kernel_start_s=round(time.monotonic() - started, 2))

    def stop(signum, _frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()  # refuse new connections at once, not leave them in the backlog
        for c in contexts.list():
            try:
                contexts.remove(c["id"])
            except HttpError:
                pass
        time.sleep(0.5)


if __name__ == "__main__":
    main()
