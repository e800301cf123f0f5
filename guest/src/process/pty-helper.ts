/**
 * Node has no PTY. A PTY process runs under this small Python helper (`python3 -I -S -c`;
 * python3 is in every template):
 *
 *   argv   <cols> <rows> <cmd> [args…]
 *   fd 0   input bytes → PTY master
 *   fd 1   PTY master output (raw bytes)
 *   fd 2   the helper's own errors
 *   fd 3   control socket: the helper first writes "<pid>\n" (the command's own pid, which the
 *          agent reports), then reads "<cols> <rows>\n" resize lines
 *
 * The command runs as a session leader with the PTY as its controlling terminal. When it exits,
 * the helper relays what is left in the PTY and exits the same way (same code, or killed by the
 * same signal), so the agent reads the command's status from the helper's.
 */
export const PTY_HELPER_SOURCE = String.raw`
import errno, fcntl, os, select, signal, struct, sys, termios

CTL = 3


def winsize(fd, cols, rows):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def child(slave, argv):
    try:
        os.close(CTL)
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
        if slave > 2:
            os.close(slave)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        os.execvp(argv[0], argv)
    except BaseException as e:
        msg = getattr(e, "strerror", None) or str(e)
        try:
            os.write(2, ("%s: %s\r\n" % (argv[0], msg)).encode())
        except OSError:
            pass
    os._exit(127)


def drain(master):
    while True:
        try:
            data = os.read(master, 16384)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            if e.errno == errno.EIO:
                return
            raise
        if not data:
            return
        write_all(1, data)


def relay(master, pid):
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    os.set_blocking(wfd, False)
    signal.set_wakeup_fd(wfd)
    signal.signal(signal.SIGCHLD, lambda s, f: None)
    os.set_blocking(master, False)
    pending = b""
    stdin_open = True
    ctl_open = True
    ctl_buf = b""
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid == pid:
            drain(master)
            return status
        rl = [master, rfd]
        if stdin_open and len(pending) < (1 << 20):
            rl.append(0)
        if ctl_open:
            rl.append(CTL)
        wl = [master] if pending else []
        rr, ww, _ = select.select(rl, wl, [])
        if master in rr:
            try:
                data = os.read(master, 16384)
            except BlockingIOError:
                data = None
            except OSError as e:
                if e.errno != errno.EIO:
                    raise
                data = b""
            if data:
                write_all(1, data)
            elif data == b"":
                return os.waitpid(pid, 0)[1]
        if rfd in rr:
            try:
                os.read(rfd, 512)
            except BlockingIOError:
                pass
        if 0 in rr:
            data = os.read(0, 65536)
            if data:
                pending += data
            else:
                stdin_open = False
        if pending and master in ww:
            try:
                n = os.write(master, pending)
                pending = pending[n:]
            except BlockingIOError:
                pass
        if CTL in rr:
            data = os.read(CTL, 4096)
            if not data:
                ctl_open = False
            else:
                ctl_buf += data
                while b"\n" in ctl_buf:
                    line, ctl_buf = ctl_buf.split(b"\n", 1)
                    parts = line.split()
                    if len(parts) == 2:
                        try:
                            winsize(master, int(parts[0]), int(parts[1]))
                        except (ValueError, OSError, OverflowError, struct.error):
                            pass


def main():
    cols, rows = int(sys.argv[1]), int(sys.argv[2])
    argv = sys.argv[3:]
    master, slave = os.openpty()
    winsize(master, cols, rows)
    pid = os.fork()
    if pid == 0:
        os.close(master)
        child(slave, argv)
    os.close(slave)
    try:
        write_all(CTL, b"%d\n" % pid)
        status = relay(master, pid)
    except BaseException:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        raise
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.set_wakeup_fd(-1)
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


main()
`;
