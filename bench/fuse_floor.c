/* A minimal FUSE server on libfuse (the reference implementation), as a
 * floor for bench/run.py fuse-read: one read-only file `big.bin` of SIZE
 * bytes whose reads are answered from one static, already-touched buffer —
 * no lookup, no parsing, no cold memory. Files are opened with direct I/O
 * like backchain's default for files of 64 MiB and more. Whatever this
 * server's `cat` speed is, no FUSE server doing real work can beat it on the
 * same machine. With a third argument `cache`, files go through the page
 * cache instead (kernel readahead, as `backchain mount --page-cache`).
 *
 * With `file=PATH` instead of `cache`, reads are answered from a read-only
 * map of PATH (SIZE bytes; mapped and faulted in once at start): the same
 * work per byte as a server lending mapped image bytes, without any lookup.
 * The static buffer stays in the CPU caches; a file's bytes come from
 * memory: the difference between the two floors is the price of real data.
 *
 *   cc -O2 fuse_floor.c $(pkg-config --cflags --libs fuse3) -o fuse_floor
 *   fuse_floor MOUNTPOINT SIZE [cache | file=PATH]   (serves in the foreground)
 */
#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define FILE_INO 2
#define BUF_SIZE (1 << 20) /* the kernel's largest read request (256 pages) */

static unsigned long long file_size;
static int page_cache;
static char *buf;
static char *file_map; /* file=PATH: the whole file, else NULL */

static void fill_attr(fuse_ino_t ino, struct stat *st) {
    memset(st, 0, sizeof(*st));
    st->st_ino = ino;
    if (ino == FUSE_ROOT_ID) {
        st->st_mode = S_IFDIR | 0555;
        st->st_nlink = 2;
    } else {
        st->st_mode = S_IFREG | 0444;
        st->st_nlink = 1;
        st->st_size = file_size;
        st->st_blksize = BUF_SIZE;
    }
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
    if (parent != FUSE_ROOT_ID || strcmp(name, "big.bin") != 0) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct fuse_entry_param e;
    memset(&e, 0, sizeof(e));
    e.ino = FILE_INO;
    e.attr_timeout = 3600;
    e.entry_timeout = 3600;
    fill_attr(FILE_INO, &e.attr);
    fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    (void)fi;
    if (ino != FUSE_ROOT_ID && ino != FILE_INO) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct stat st;
    fill_attr(ino, &st);
    fuse_reply_attr(req, &st, 3600);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    if (ino != FILE_INO) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    fi->direct_io = !page_cache;
    fuse_reply_open(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
    (void)ino;
    (void)fi;
    if ((unsigned long long)off >= file_size) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    if (size > BUF_SIZE)
        size = BUF_SIZE;
    if (size > file_size - off)
        size = file_size - off;
    fuse_reply_buf(req, file_map ? file_map + off : buf, size);
}

static void op_init(void *userdata, struct fuse_conn_info *conn) {
    (void)userdata;
    conn->max_read = BUF_SIZE;
    conn->max_readahead = BUF_SIZE;
}

static const struct fuse_lowlevel_ops ops = {
    .init = op_init,
    .lookup = op_lookup,
    .getattr = op_getattr,
    .open = op_open,
    .read = op_read,
};

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "cache") != 0 && strncmp(argv[3], "file=", 5) != 0)) {
        fprintf(stderr, "usage: %s MOUNTPOINT SIZE [cache | file=PATH]\n", argv[0]);
        return 2;
    }
    page_cache = argc == 4 && strcmp(argv[3], "cache") == 0;
    file_size = strtoull(argv[2], NULL, 10);
    if (argc == 4 && !page_cache) {
        int fd = open(argv[3] + 5, O_RDONLY);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0 || (unsigned long long)st.st_size < file_size) {
            fprintf(stderr, "%s: cannot open %s, or shorter than %llu bytes\n", argv[0], argv[3] + 5, file_size);
            return 1;
        }
        file_map = mmap(NULL, file_size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
        if (file_map == MAP_FAILED)
            return 1;
        close(fd);
    }
    buf = malloc(BUF_SIZE);
    if (!buf)
        return 1;
    memset(buf, 0xa5, BUF_SIZE);
    char *fargv[] = {argv[0], "-o", "ro,fsname=fuse-floor,max_read=1048576", NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
    struct fuse_session *se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
    if (!se || fuse_session_mount(se, argv[1]) != 0)
        return 1;
    fuse_set_signal_handlers(se);
    struct fuse_loop_config *cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_clone_fd(cfg, 1);
    int r = fuse_session_loop_mt(se, cfg);
    fuse_loop_cfg_destroy(cfg);
    fuse_remove_signal_handlers(se);
    fuse_session_unmount(se);
    fuse_session_destroy(se);
    return r ? 1 : 0;
}
