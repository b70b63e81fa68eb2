/* The --supervise loop and the PID-1 shim.
 *
 * Supervisor: forks the server and restarts it whenever it exits or is killed, with a
 * backoff of 0.1 s doubling to 2 s (reset once a server has run for 10 s). The server
 * dies with its supervisor (PR_SET_PDEATHSIG), so a new supervisor can bind again.
 *
 * Shim (the kernel ran us as PID 1 through init=/sbin/fc-guest-agent): mount /proc if
 * missing, start the supervisor in its own session (double fork: the real init adopts it),
 * then exec the real init with our argv[1..]. PID 1 must never exit: if no init can be
 * exec'd it says why on the console and sleeps forever (reaping orphans).
 */
#define _GNU_SOURCE 1 /* ptsname_r, accept4, pipe2, strndup, ... */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

#define BACKOFF_MIN 0.1
#define BACKOFF_MAX 2.0
#define HEALTHY_RUN_S 10.0

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL); /* a signal cuts it short: the loop checks stop_requested */
}

static void quiet_stdio(int keep_stderr)
{
    int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return;
    dup2(fd, 0);
    if (!keep_stderr) {
        dup2(fd, 1);
        dup2(fd, 2);
    }
    close(fd);
}

static void describe(int status, char *out, size_t n)
{
    if (WIFEXITED(status))
        snprintf(out, n, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, n, "was killed by signal %d", WTERMSIG(status));
    else
        snprintf(out, n, "stopped (status 0x%x)", status);
}

int supervise(const char *addr, int detach)
{
    if (detach) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fc-guest-agent: fork");
            return 1;
        }
        if (pid > 0)
            return 0; /* the caller's shell goes on; the supervisor runs in the background */
        setsid();
    }
    if (chdir("/") < 0)
        log_msg("chdir /: %s", strerror(errno));
    int kmsg = access("/dev/kmsg", W_OK) == 0;
    if (kmsg)
        log_to_kmsg_if_possible();
    quiet_stdio(!kmsg);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    pid_t self = getpid();
    double backoff = BACKOFF_MIN;
    unsigned restarts = 0;
    log_note("supervising the server on %s", addr);
    while (!stop_requested) {
        double started = mono_now();
        pid_t child = fork();
        if (child == 0) {
            signal(SIGTERM, SIG_DFL);
            signal(SIGINT, SIG_DFL);
            signal(SIGHUP, SIG_DFL);
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != self) /* the supervisor died before prctl */
                _exit(0);
            log_muted = restarts >= 5 && restarts % 100 != 0; /* same failure again: say it now and then */
            _exit(serve(addr));
        }
        if (child < 0) {
            log_msg("fork: %s", strerror(errno));
            sleep_s(BACKOFF_MAX);
            continue;
        }
        int status = 0;
        while (waitpid(child, &status, 0) < 0) {
            if (errno != EINTR) {
                status = 0;
                break;
            }
            if (stop_requested)
                kill(child, SIGTERM);
        }
        if (stop_requested)
            break;
        if (mono_now() - started >= HEALTHY_RUN_S) { /* it had worked: a new story */
            backoff = BACKOFF_MIN;
            restarts = 0;
        }
        char why[64];
        describe(status, why, sizeof why);
        /* Say it for the first restarts, then only now and then (a guest without vsock
         * would otherwise fill the console every 2 s). */
        if (restarts < 5 || restarts % 100 == 0)
            log_msg("server %s; restarting in %.1f s (restart %u in a row)", why, backoff, restarts + 1);
        restarts++;
        sleep_s(backoff);
        backoff = backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : backoff * 2;
    }
    log_note("supervisor stopping");
    return 0;
}

/* ---- PID 1 -------------------------------------------------------------------------------- */

/* The value of fc_macos.init= on the kernel command line (static buffer; "" if absent). */
static const char *cmdline_init(void)
{
    static char value[512];
    char buf[4096];
    value[0] = 0;
    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return value;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return value;
    buf[n] = 0;
    static const char key[] = "fc_macos.init=";
    for (char *p = buf; *p;) {
        while (*p == ' ' || *p == '\n' || *p == '\t')
            p++;
        int at_key = !strncmp(p, key, sizeof key - 1);
        char *v = p + (at_key ? sizeof key - 1 : 0);
        char *end;
        if (at_key && *v == '"') { /* fc_macos.init="..." */
            v++;
            end = strchr(v, '"');
        } else
            end = v + strcspn(v, " \n\t");
        if (!end)
            end = v + strlen(v);
        if (at_key) {
            size_t len = (size_t)(end - v) < sizeof value - 1 ? (size_t)(end - v) : sizeof value - 1;
            memcpy(value, v, len);
            value[len] = 0; /* the last one wins, like the kernel's own init= */
        }
        p = *end ? end + 1 : end;
    }
    return value;
}

static void console_say(const char *msg)
{
    (void)write_all(2, msg, strlen(msg));
}

void pid1_shim(int argc, char **argv)
{
    struct stat st;
    if (stat("/proc/self", &st) < 0) {
        mkdir("/proc", 0555);
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    }
    pid_t pid = fork();
    if (pid == 0) {
        setsid();
        if (fork() == 0) {
            char addr[32];
            snprintf(addr, sizeof addr, "vsock:%d", FCGA_DEFAULT_PORT);
            _exit(supervise(addr, 0));
        }
        _exit(0);
    }
    if (pid > 0)
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;

    const char *wanted = cmdline_init();
    const char *candidates[] = {wanted, "/sbin/init", "/etc/init", "/bin/init", "/bin/sh"};
    char **args = calloc((size_t)argc + 1, sizeof *args);
    if (args) {
        for (int i = 1; i < argc; i++)
            args[i] = argv[i];
        for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
            const char *init = candidates[i];
            if (!*init || access(init, X_OK) < 0) {
                if (i == 0 && *init) {
                    char msg[700];
                    snprintf(msg, sizeof msg, "fc-guest-agent: fc_macos.init=%.512s is not executable (%s); trying "
                             "/sbin/init\n", init, strerror(errno));
                    console_say(msg);
                }
                continue;
            }
            args[0] = (char *)init;
            execv(init, args);
            char msg[700];
            snprintf(msg, sizeof msg, "fc-guest-agent: cannot exec %.512s: %s\n", init, strerror(errno));
            console_say(msg);
        }
    }
    console_say("fc-guest-agent: no init found (fc_macos.init=, /sbin/init, /etc/init, /bin/init, /bin/sh); "
                "the guest agent keeps running, the system does not start\n");
    for (;;) {
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
        sleep(1);
    }
}
