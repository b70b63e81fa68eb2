/* vsock_guest_tool: the guest side of tests/doubles/test_vhost_vsock.py (AF_VSOCK from a
 * busybox guest, which has no vsock client of its own). Built static by the test with zig cc.
 *
 *   vsock_guest_tool serve PORT echo|sink  listen on AF_VSOCK PORT (any CID), detach, print
 *                                          "serving PORT" once listening; one child per
 *                                          connection. echo: send back every byte until EOF.
 *                                          sink: read a decimal length line, then that many
 *                                          bytes, answer "got <count>\n".
 *   vsock_guest_tool say CID PORT TEXT     connect, send TEXT, print "reply [<answer>]", or
 *                                          "connect failed: <reason>".
 *   vsock_guest_tool push CID PORT MIB     connect, send MIB MiB of the 64 KiB block whose byte
 *                                          i is (i * 7 + i / 256) & 255, print "pushed: <answer>".
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static char buf[65536];

static int write_all(int fd, const char *data, size_t n) {
    while (n) {
        ssize_t w = write(fd, data, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        data += w;
        n -= (size_t)w;
    }
    return 0;
}

static void echo(int c) {
    ssize_t n;
    while ((n = read(c, buf, sizeof buf)) > 0)
        if (write_all(c, buf, (size_t)n)) return;
}

static void sink(int c) {
    char line[32];
    int len = 0;
    while (len < 31 && read(c, line + len, 1) == 1 && line[len] != '\n') len++;
    line[len] = 0;
    long want = atol(line), got = 0;
    ssize_t n;
    while (got < want && (n = read(c, buf, sizeof buf)) > 0) got += n;
    len = snprintf(line, sizeof line, "got %ld\n", got);
    write_all(c, line, (size_t)len);
    read(c, buf, 1); /* until the host closes */
}

static int serve(int port, int sinking) {
    struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port};
    int s = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof addr) || listen(s, 128)) {
        printf("serve failed: %s\n", strerror(errno));
        return 1;
    }
    signal(SIGCHLD, SIG_IGN);
    printf("serving %d\n", port);
    fflush(stdout);
    if (fork()) return 0;
    setsid();
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) continue;
        if (!fork()) {
            close(s);
            sinking ? sink(c) : echo(c);
            _exit(0);
        }
        close(c);
    }
}

static int dial(const char *cid, const char *port) {
    struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = atoi(cid), .svm_port = atoi(port)};
    int s = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&addr, sizeof addr)) {
        printf("connect failed: %s\n", strerror(errno));
        return -1;
    }
    return s;
}

static void print_answer(int s, const char *what) {
    ssize_t n = read(s, buf, 255);
    buf[n > 0 ? n : 0] = 0;
    printf(what, buf);
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "serve")) return serve(atoi(argv[2]), !strcmp(argv[3], "sink"));
    if (argc == 5 && !strcmp(argv[1], "say")) {
        int s = dial(argv[2], argv[3]);
        if (s < 0) return 1;
        write_all(s, argv[4], strlen(argv[4]));
        print_answer(s, "reply [%s]\n");
        return 0;
    }
    if (argc == 5 && !strcmp(argv[1], "push")) {
        int s = dial(argv[2], argv[3]);
        if (s < 0) return 1;
        for (int i = 0; i < (int)sizeof buf; i++) buf[i] = (char)(i * 7 + i / 256);
        for (long i = atol(argv[4]) * 16; i > 0; i--)
            if (write_all(s, buf, sizeof buf)) {
                printf("push failed: %s\n", strerror(errno));
                return 1;
            }
        print_answer(s, "pushed: %s\n");
        return 0;
    }
    fprintf(stderr, "usage: vsock_guest_tool serve PORT echo|sink | say CID PORT TEXT | push CID PORT MIB\n");
    return 2;
}
