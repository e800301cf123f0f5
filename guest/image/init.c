/*
 * dnah guest init: PID 1 of a dnah microVM (qemu or Cloud Hypervisor), run from the initramfs.
 *
 *  1. mounts /proc /sys /dev, loads the modules listed in /modules.list (virtio, vsock,
 *     virtio-fs, the root disk's driver and filesystem) with finit_module; EEXIST is fine
 *  2. mounts the ext4 root disk (dnah.root=, default /dev/vda) and switches to it (move mount +
 *     chroot; the init keeps running as PID 1)
 *  3. mounts /run /tmp /dev/pts /dev/shm, the virtio-fs share (dnah.share=<tag>) at
 *     /mnt/dnah-share, sets the hostname (dnah.hostname=; also written to /etc/hostname and
 *     mapped in /etc/hosts), configures eth0 (dnah.ip=a.b.c.d/n, dnah.gw=a.b.c.d|none), seeds
 *     entropy (dnah.seed=<hex>, then a forced CRNG reseed) and the clock (dnah.clock=<unix s>);
 *     keeps the sandbox id (dnah.id=) in /run/dnah/sandbox-id
 *  4. binds AF_VSOCK ports 49983 (agent), 49999 (code interpreter), 49982 (port forwarder) and
 *     starts the agent with them (--listen-vsock-fd <fd>:<port>); restarts it if it dies
 *  5. serves the control port 49981 (a child process): the host sends one line
 *     "seed=<hex> clock=<unix s>\n" after a resume or restore, the init reseeds entropy and sets
 *     the clock and answers "OK\n"; "share=<tag>" also mounts the share again (after its device
 *     was unplugged for a snapshot and plugged back); "hostname=<name>" and "id=<sandbox id>"
 *     give a restored clone its own identity (the agent is restarted with the new id only if it
 *     dies: the vmm tells the running agent through its /init call); SIGUSR1 does the same from
 *     /run/dnah/reseed
 *  6. reaps every orphan
 *
 * The agent never listens on TCP. Static (gcc -static), no allocation after startup beyond
 * the stack. Log lines go to the console (the VM's serial log) prefixed "dnah-init:".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <linux/vm_sockets.h>
#include <net/if.h>
#include <net/route.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NODE_DIR "/opt/dnah/node"
#define AGENT "/opt/dnah/agent/agent.mjs"
#define SHARE_DIR "/mnt/dnah-share"
#define RESEED_FILE "/run/dnah/reseed"
/* The sandbox id, in a file: the control server is a child process, and a restored clone's new
 * id must reach the init (PID 1) that restarts the agent with it. /run is in guest RAM, so a
 * snapshot carries it. */
#define ID_FILE "/run/dnah/sandbox-id"
#define HOSTS_MARK "# dnah-hostname"

#ifndef RNDRESEEDCRNG
#define RNDRESEEDCRNG _IO('R', 0x07) /* Linux >= 4.17 */
#endif

static const unsigned VSOCK_PORTS[] = {49983, 49999, 49982};
#define CONTROL_PORT 49981
#define NPORTS (sizeof VSOCK_PORTS / sizeof VSOCK_PORTS[0])

static char cmdline[4096];
static volatile sig_atomic_t reseed_requested;

static void say(const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n > (int)sizeof buf - 2) n = sizeof buf - 2;
  buf[n++] = '\n';
  dprintf(2, "dnah-init: %.*s", n, buf);
}

/* Nothing sensible is left to do: power off (with -no-reboot QEMU then exits). */
static void fatal(const char *what) {
  say("fatal: %s: %s", what, strerror(errno));
  sync();
  reboot(RB_POWER_OFF);
  for (;;) pause();
}

/* The value of `key=` on the kernel command line, copied into out; 0 when absent. */
static int param(const char *key, char *out, size_t outlen) {
  size_t klen = strlen(key);
  for (char *p = cmdline; *p;) {
    while (*p == ' ' || *p == '\n') p++;
    char *end = p;
    while (*end && *end != ' ' && *end != '\n') end++;
    if ((size_t)(end - p) > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
      size_t vlen = (size_t)(end - p) - klen - 1;
      if (vlen >= outlen) vlen = outlen - 1;
      memcpy(out, p + klen + 1, vlen);
      out[vlen] = 0;
      return 1;
    }
    p = end;
  }
  return 0;
}

static void mount_or_die(const char *src, const char *dst, const char *type, unsigned long flags,
                         const char *data) {
  mkdir(dst, 0755);
  if (mount(src, dst, type, flags, data) != 0) fatal(dst);
}

static void load_modules(void) {
  FILE *f = fopen("/modules.list", "r");
  if (!f) return;
  char path[512];
  int loaded = 0;
  while (fgets(path, sizeof path, f)) {
    path[strcspn(path, "\n")] = 0;
    if (!path[0]) continue;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      say("module %s: %s", path, strerror(errno));
      continue;
    }
    if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST)
      say("module %s: %s", path, strerror(errno));
    else
      loaded++;
    close(fd);
  }
  fclose(f);
  say("%d modules loaded", loaded);
}

static void wait_for(const char *path, int ms) {
  struct stat st;
  for (int i = 0; i < ms / 10; i++) {
    if (stat(path, &st) == 0) return;
    usleep(10000);
  }
  errno = ENOENT;
  fatal(path);
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Mixes hex-encoded bytes from the host into the kernel's pool and credits them. */
static void seed_entropy(const char *hex) {
  struct {
    struct rand_pool_info info;
    unsigned char buf[256];
  } e;
  size_t n = 0;
  for (const char *p = hex; p[0] && p[1] && n < sizeof e.buf; p += 2) {
    int hi = hexval(p[0]), lo = hexval(p[1]);
    if (hi < 0 || lo < 0) break;
    e.buf[n++] = (unsigned char)(hi << 4 | lo);
  }
  if (n == 0) return;
  e.info.entropy_count = (int)(n * 8);
  e.info.buf_size = (int)n;
  int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
  if (fd < 0 || ioctl(fd, RNDADDENTROPY, &e) != 0) say("entropy not seeded: %s", strerror(errno));
  /* Credited entropy reaches the CRNG only at its next scheduled reseed (up to a minute away):
   * clones of one snapshot would hand out the same /dev/urandom bytes until then. */
  else if (ioctl(fd, RNDRESEEDCRNG) != 0)
    say("crng not reseeded: %s", strerror(errno));
  if (fd >= 0) close(fd);
}

/* Writes `len` bytes to `path` through a temporary file and a rename (never half a file). */
static int write_file_atomic(const char *path, const char *data, size_t len, mode_t mode) {
  char tmp[128];
  snprintf(tmp, sizeof tmp, "%s.dnah-tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return -1;
  ssize_t w = write(fd, data, len);
  int ok = w == (ssize_t)len && fsync(fd) == 0;
  close(fd);
  if (!ok || rename(tmp, path) != 0) {
    unlink(tmp);
    return -1;
  }
  return 0;
}

static int valid_hostname(const char *h) {
  size_t n = strlen(h);
  if (n == 0 || n > 63 || h[0] == '-') return 0;
  for (const char *p = h; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-'))
      return 0;
  return 1;
}

/* Sets the hostname, writes it to /etc/hostname and maps it in /etc/hosts on a line of its own
 * (marked, replaced on the next change; other lines are the user's), so sudo and `hostname -f`
 * resolve it. 0 when the kernel took it. */
static int set_hostname(const char *host) {
  if (!valid_hostname(host)) {
    say("hostname %.64s refused", host);
    return -1;
  }
  if (sethostname(host, strlen(host)) != 0) {
    say("hostname: %s", strerror(errno));
    return -1;
  }
  static char buf[65536];
  char line[128];
  size_t n = 0;
  int fd = open("/etc/hosts", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t r;
    while (n < sizeof buf - sizeof line && (r = read(fd, buf + n, sizeof buf - sizeof line - n)) > 0) n += (size_t)r;
    close(fd);
    if (n >= sizeof buf - sizeof line) {
      say("/etc/hosts larger than %zu bytes: left as it is", sizeof buf - sizeof line);
      n = 0, fd = -2;
    }
  }
  /* Drop our previous line, keep every other. */
  size_t out = 0;
  for (size_t i = 0; i < n;) {
    char *nl = memchr(buf + i, '\n', n - i);
    size_t end = nl ? (size_t)(nl - buf) + 1 : n;
    size_t len = end - i;
    int ours = len > strlen(HOSTS_MARK) && memmem(buf + i, len, HOSTS_MARK, strlen(HOSTS_MARK)) != NULL;
    if (!ours) {
      memmove(buf + out, buf + i, len);
      out += len;
      if (!nl) buf[out++] = '\n';
    }
    i = end;
  }
  int l = snprintf(line, sizeof line, "127.0.1.1 %s %s\n", host, HOSTS_MARK);
  memcpy(buf + out, line, (size_t)l);
  out += (size_t)l;
  if (fd != -2 && write_file_atomic("/etc/hosts", buf, out, 0644) != 0) say("/etc/hosts: %s", strerror(errno));
  l = snprintf(line, sizeof line, "%s\n", host);
  if (write_file_atomic("/etc/hostname", line, (size_t)l, 0644) != 0) say("/etc/hostname: %s", strerror(errno));
  return 0;
}

/* Keeps the sandbox id for the next agent start (see ID_FILE). */
static int set_sandbox_id(const char *id) {
  size_t n = strlen(id);
  if (n == 0 || n > 120) return -1;
  return write_file_atomic(ID_FILE, id, n, 0600) == 0 ? 0 : (say("%s: %s", ID_FILE, strerror(errno)), -1);
}

static void set_clock(const char *secs) {
  char *end;
  double t = strtod(secs, &end);
  if (end == secs || t < 1e9) return;
  struct timespec ts = {.tv_sec = (time_t)t, .tv_nsec = (long)((t - (double)(time_t)t) * 1e9)};
  if (clock_settime(CLOCK_REALTIME, &ts) != 0) say("clock not set: %s", strerror(errno));
}

/* After a snapshot the virtio-fs device was unplugged and plugged again: the old mount answers
 * ENOTCONN, so it is detached and the share (tag) mounted afresh. The driver may still be
 * probing the new device: retried for 3 s. 0 when mounted. */
static int remount_share(const char *tag) {
  if (umount2(SHARE_DIR, MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT)
    say("share: detach %s: %s", SHARE_DIR, strerror(errno));
  mkdir(SHARE_DIR, 0755);
  for (int i = 0; i < 30; i++) {
    if (mount(tag, SHARE_DIR, "virtiofs", 0, NULL) == 0) return 0;
    usleep(100000);
  }
  say("share %s not mounted again: %s", tag, strerror(errno));
  return -1;
}

/* Applies "seed=<hex>", "clock=<unix s>", "share=<tag>" (mount the share again),
 * "hostname=<name>" and "id=<sandbox id>" words, separated by spaces or newlines; returns how
 * many it applied, -1 when one failed. */
static int apply_settings(char *text) {
  int applied = 0, failed = 0;
  for (char *save = NULL, *w = strtok_r(text, " \n\r\t", &save); w; w = strtok_r(NULL, " \n\r\t", &save)) {
    if (strncmp(w, "seed=", 5) == 0) seed_entropy(w + 5), applied++;
    else if (strncmp(w, "clock=", 6) == 0) set_clock(w + 6), applied++;
    else if (strncmp(w, "share=", 6) == 0) remount_share(w + 6) == 0 ? applied++ : failed++;
    else if (strncmp(w, "hostname=", 9) == 0) set_hostname(w + 9) == 0 ? applied++ : failed++;
    else if (strncmp(w, "id=", 3) == 0) set_sandbox_id(w + 3) == 0 ? applied++ : failed++;
  }
  return failed ? -1 : applied;
}

static void reseed_from_file(void) {
  char text[700];
  int fd = open(RESEED_FILE, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    say("reseed asked, but %s: %s", RESEED_FILE, strerror(errno));
    return;
  }
  ssize_t n = read(fd, text, sizeof text - 1);
  close(fd);
  text[n > 0 ? n : 0] = 0;
  unlink(RESEED_FILE);
  say("reseeded from %s (%d settings)", RESEED_FILE, apply_settings(text));
}

/* The control port's server (a child of the init): one line per connection, 2 s to send it. */
static void serve_control(int ls) {
  for (;;) {
    int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno != EINTR) usleep(100000);
      continue;
    }
    struct timeval tv = {.tv_sec = 2};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char line[700];
    size_t n = 0;
    while (n < sizeof line - 1) {
      ssize_t r = read(c, line + n, sizeof line - 1 - n);
      if (r <= 0) break;
      n += (size_t)r;
      if (memchr(line, '\n', n)) break;
    }
    line[n] = 0;
    int applied = memchr(line, '\n', n) ? apply_settings(line) : 0;
    /* One line per reseed (resume, restore): the console shows that it happened. */
    say("control: %d settings applied", applied);
    const char *reply = applied > 0    ? "OK\n"
                        : applied < 0 ? "ERR a setting failed (see the console)\n"
                                      : "ERR expected: seed=<hex> clock=<unix seconds>\n";
    if (write(c, reply, strlen(reply)) < 0) say("control reply: %s", strerror(errno));
    close(c);
  }
}

static pid_t start_control(int ls) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  serve_control(ls);
  _exit(0);
}

static int ifreq_op(int s, unsigned long op, struct ifreq *ifr, const char *what) {
  if (ioctl(s, op, ifr) == 0) return 0;
  say("%s %s: %s", ifr->ifr_name, what, strerror(errno));
  return -1;
}

static void link_up(int s, const char *name) {
  struct ifreq ifr = {0};
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ifreq_op(s, SIOCGIFFLAGS, &ifr, "flags") != 0) return;
  ifr.ifr_flags |= IFF_UP;
  ifreq_op(s, SIOCSIFFLAGS, &ifr, "up");
}

/* dnah.ip=a.b.c.d/n on eth0; dnah.gw=a.b.c.d adds the default route. */
static void configure_network(void) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return;
  link_up(s, "lo");
  char ip[64], gw[64];
  if (param("dnah.ip", ip, sizeof ip)) {
    char *slash = strchr(ip, '/');
    int prefix = slash ? atoi(slash + 1) : 24;
    if (slash) *slash = 0;
    struct ifreq ifr = {0};
    strncpy(ifr.ifr_name, "eth0", IFNAMSIZ - 1);
    struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
    sin->sin_family = AF_INET;
    if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1 && ifreq_op(s, SIOCSIFADDR, &ifr, "address") == 0) {
      sin->sin_addr.s_addr = prefix <= 0 ? 0 : htonl(0xffffffffu << (32 - prefix));
      ifreq_op(s, SIOCSIFNETMASK, &ifr, "netmask");
      link_up(s, "eth0");
      if (param("dnah.gw", gw, sizeof gw) && strcmp(gw, "none") != 0) {
        struct rtentry rt = {0};
        struct sockaddr_in *g = (struct sockaddr_in *)&rt.rt_gateway;
        g->sin_family = AF_INET;
        ((struct sockaddr_in *)&rt.rt_dst)->sin_family = AF_INET;
        ((struct sockaddr_in *)&rt.rt_genmask)->sin_family = AF_INET;
        rt.rt_flags = RTF_UP | RTF_GATEWAY;
        if (inet_pton(AF_INET, gw, &g->sin_addr) != 1 || ioctl(s, SIOCADDRT, &rt) != 0)
          say("default route via %s: %s", gw, strerror(errno));
      }
    }
  }
  close(s);
}

/* A listening AF_VSOCK socket on `port` (any CID). The transport can appear a little after
 * its module loaded, so socket() is retried. Not close-on-exec: the agent inherits it. */
static int vsock_listen(unsigned port) {
  int s = -1;
  for (int i = 0; i < 100 && s < 0; i++) {
    s = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (s < 0) usleep(50000);
  }
  if (s < 0) fatal("socket(AF_VSOCK)");
  struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port};
  if (bind(s, (struct sockaddr *)&addr, sizeof addr) != 0) fatal("bind vsock");
  if (listen(s, 511) != 0) fatal("listen vsock");
  return s;
}

static pid_t start_agent(const int *fds, const char *boot_id) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  /* The id a restore gave this VM wins over the boot's (see ID_FILE). */
  char sandbox_id[128];
  snprintf(sandbox_id, sizeof sandbox_id, "%s", boot_id);
  int idf = open(ID_FILE, O_RDONLY | O_CLOEXEC);
  if (idf >= 0) {
    ssize_t n = read(idf, sandbox_id, sizeof sandbox_id - 1);
    if (n > 0) sandbox_id[n] = 0;
    else snprintf(sandbox_id, sizeof sandbox_id, "%s", boot_id);
    close(idf);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  setsid();
  char specs[NPORTS][32];
  char *argv[8 + 2 * NPORTS];
  int a = 0;
  argv[a++] = NODE_DIR "/lib/ld-linux-x86-64.so.2";
  argv[a++] = "--library-path";
  argv[a++] = NODE_DIR "/lib";
  argv[a++] = NODE_DIR "/bin/node";
  argv[a++] = "--no-warnings";
  argv[a++] = AGENT;
  for (size_t i = 0; i < NPORTS; i++) {
    snprintf(specs[i], sizeof specs[i], "%d:%u", fds[i], VSOCK_PORTS[i]);
    argv[a++] = "--listen-vsock-fd";
    argv[a++] = specs[i];
  }
  argv[a] = NULL;
  char idenv[160];
  snprintf(idenv, sizeof idenv, "DNAH_SANDBOX_ID=%s", sandbox_id);
  char *envp[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
                  "LANG=C.UTF-8", idenv, NULL};
  chdir("/");
  execve(argv[0], argv, envp);
  say("exec agent: %s", strerror(errno));
  _exit(127);
}

static void on_usr1(int sig) {
  (void)sig;
  reseed_requested = 1;
}

int main(void) {
  if (getpid() != 1) {
    fprintf(stderr, "dnah-init: must run as PID 1 of a microVM\n");
    return 2;
  }
  mount_or_die("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
  int con = open("/dev/console", O_RDWR | O_NOCTTY);
  if (con >= 0) {
    dup2(con, 0), dup2(con, 1), dup2(con, 2);
    if (con > 2) close(con);
  }
  mount_or_die("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  mount_or_die("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  int cf = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
  if (cf >= 0) {
    ssize_t n = read(cf, cmdline, sizeof cmdline - 1);
    cmdline[n > 0 ? n : 0] = 0;
    close(cf);
  }
  say("started");
  load_modules();

  char root[64] = "/dev/vda";
  param("dnah.root", root, sizeof root);
  wait_for(root, 10000);
  mount_or_die(root, "/newroot", "ext4", MS_NOATIME, NULL);
  for (const char *const *m = (const char *const[]){"/dev", "/proc", "/sys", NULL}; *m; m++) {
    char dst[64];
    snprintf(dst, sizeof dst, "/newroot%s", *m);
    mkdir(dst, 0755);
    if (mount(*m, dst, NULL, MS_MOVE, NULL) != 0) fatal(dst);
  }
  if (chdir("/newroot") != 0 || mount(".", "/", NULL, MS_MOVE, NULL) != 0 || chroot(".") != 0 ||
      chdir("/") != 0)
    fatal("switch root");

  mount_or_die("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
  mkdir("/run/dnah", 0700);
  mount_or_die("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  mount_or_die("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "mode=0620,ptmxmode=0666");
  mount_or_die("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  char share[64];
  if (param("dnah.share", share, sizeof share)) {
    mkdir("/mnt", 0755);
    mkdir(SHARE_DIR, 0755);
    if (mount(share, SHARE_DIR, "virtiofs", 0, NULL) != 0) say("share %s: %s", share, strerror(errno));
  }
  char value[600];
  set_hostname(param("dnah.hostname", value, sizeof value) ? value : "sandbox");
  if (param("dnah.seed", value, sizeof value)) seed_entropy(value);
  if (param("dnah.clock", value, sizeof value)) set_clock(value);
  configure_network();

  int fds[NPORTS];
  for (size_t i = 0; i < NPORTS; i++) fds[i] = vsock_listen(VSOCK_PORTS[i]);
  /* The host waits for this line before it dials: vhost-device-vsock 0.3.0 wedges for good
   * when a connection arrives before the guest driver has set up its rings. */
  say("vsock ready");
  char sandbox_id[128] = "";
  if (param("dnah.id", sandbox_id, sizeof sandbox_id)) set_sandbox_id(sandbox_id);

  struct sigaction sa = {0};
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  int control_fd = vsock_listen(CONTROL_PORT);
  fcntl(control_fd, F_SETFD, FD_CLOEXEC);
  pid_t control = start_control(control_fd);
  pid_t agent = start_agent(fds, sandbox_id);
  say("agent started (pid %d), vsock ports 49983 49999 49982", (int)agent);
  int restarts = 0;
  for (;;) {
    if (reseed_requested) {
      reseed_requested = 0;
      reseed_from_file();
    }
    int status;
    pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno != EINTR) usleep(100000);
      continue;
    }
    if (pid == control) {
      say("control server exited (status %d); restarting", status);
      sleep(1);
      control = start_control(control_fd);
      continue;
    }
    if (pid != agent) continue;
    say("agent exited (status %d); restarting", status);
    /* Back off a little when it keeps failing, but never give up: it is the VM's only door. */
    sleep(restarts < 5 ? 1 : 5);
    restarts++;
    agent = start_agent(fds, sandbox_id);
  }
}
