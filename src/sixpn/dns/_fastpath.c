/*
 * sixpn.dns._fastpath: the DNS server's UDP loop for cached answers, in C.
 *
 * Why it exists: the UDP path is the hot path (ARCHITECTURE habit 10), and SPEC 9 asks for no
 * more CPU per `.internal` query than Unbound. With whole responses cached, what was left
 * (bench/README.md, Results, suggestion 5) was the stdlib socket glue: per datagram a
 * `recvfrom` and a `sendto` syscall, the source address formatted as text and its tuple built,
 * and the interpreter's loop around them. Here a batch is received with one `recvmmsg`, cache
 * hits are answered with one `sendmmsg`, and only misses reach Python.
 *
 * What it must keep identical to the Python path (DnsServer._drain, _answer_udp, network_of):
 * - a source is 6PN when it is in fdaa::/16; its network ID is bytes 2-5 of the address,
 *   big-endian;
 * - the cache is the Python dict the slow path fills, keyed by (network ID as int, the query
 *   after its 2-byte ID as bytes); a hit is answered with the query's ID + the cached bytes
 *   and counted as rcodes[cached[1] & 0x0F] += 1;
 * - everything else (non-6PN sources, misses, datagrams under 12 bytes) goes back to Python
 *   as (data, address), both exactly as socket.recvfrom(4096) returns them;
 * - a failed send counts as dropped; so does a datagram over 4096 bytes (MSG_TRUNC), which
 *   the Python path would have read truncated.
 * The GIL is held throughout: the socket is non-blocking, so the syscalls never wait, and
 * the static buffers below need no other lock (a re-entrant call is refused).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_BATCH 64      /* datagrams per recvmmsg/sendmmsg */
#define MAX_DATAGRAM 4096 /* as the Python path's recvfrom(4096) */

static unsigned char rbuf[MAX_BATCH][MAX_DATAGRAM];
static struct sockaddr_storage rname[MAX_BATCH];
static struct iovec riov[MAX_BATCH];
static struct mmsghdr rmsg[MAX_BATCH];
static struct iovec siov[MAX_BATCH][2];
static struct mmsghdr smsg[MAX_BATCH];
static PyObject *held[MAX_BATCH]; /* the cached answers being sent, referenced until sent */
static int busy;

/* The source address as socket.recvfrom gives it: (host, port[, flowinfo, scope_id]). */
static PyObject *
address_of(const struct sockaddr_storage *ss)
{
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        if (inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(siII)", host, ntohs(a->sin6_port), ntohl(a->sin6_flowinfo),
                             a->sin6_scope_id);
    }
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        if (inet_ntop(AF_INET, &a->sin_addr, host, sizeof host) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(si)", host, ntohs(a->sin_port));
    }
    PyErr_SetString(PyExc_OSError, "unexpected address family");
    return NULL;
}

/* Receive up to `want` datagrams without waiting; EINTR retried, other errors end the batch
 * (a pending socket error is consumed by the failing call; the next wake-up goes on). */
static int
receive(int fd, int want)
{
    for (int i = 0; i < want; i++) {
        riov[i] = (struct iovec){rbuf[i], MAX_DATAGRAM};
        rmsg[i].msg_hdr = (struct msghdr){.msg_name = &rname[i],
            .msg_namelen = sizeof rname[i], .msg_iov = &riov[i], .msg_iovlen = 1};
    }
    for (;;) {
        int n = recvmmsg(fd, rmsg, (unsigned int)want, MSG_DONTWAIT, NULL);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return 0;
    }
}

/* Send the first `count` prepared answers; returns how many could not be sent. A partial
 * sendmmsg goes on from the first unsent one; the one that failed is dropped, as a failed
 * sendto is in Python (buffer full, client gone). */
static Py_ssize_t
send_all(int fd, int count)
{
    Py_ssize_t dropped = 0;
    int off = 0;
    while (off < count) {
        int n = sendmmsg(fd, smsg + off, (unsigned int)(count - off), MSG_DONTWAIT);
        if (n > 0) {
            off += n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            dropped++;
            off++;
        }
    }
    return dropped;
}

/* rcodes[r] += counts[r] for the list the Python counters hold. */
static int
add_counts(PyObject *rcodes, const Py_ssize_t *counts)
{
    for (int r = 0; r < 16 && r < PyList_GET_SIZE(rcodes); r++) {
        if (counts[r] == 0)
            continue;
        PyObject *inc = PyLong_FromSsize_t(counts[r]);
        PyObject *sum = inc ? PyNumber_Add(PyList_GET_ITEM(rcodes, r), inc) : NULL;
        Py_XDECREF(inc);
        if (sum == NULL)
            return -1;
        PyList_SetItem(rcodes, r, sum); /* steals sum */
    }
    return 0;
}

static void
release(int hits, PyObject *net_obj)
{
    for (int i = 0; i < hits; i++)
        Py_DECREF(held[i]);
    Py_XDECREF(net_obj);
    busy = 0;
}

static PyObject *
drain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs < 4 || nargs > 5) {
        PyErr_SetString(PyExc_TypeError,
                        "drain(fd, responses, rcodes, max_batch, any_source_net=None)");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    PyObject *responses = args[1], *rcodes = args[2];
    long max_batch = PyLong_AsLong(args[3]);
    long long any_net = -1; /* tests only: every source counts as this network */
    if (nargs == 5 && args[4] != Py_None)
        any_net = PyLong_AsLongLong(args[4]);
    if (PyErr_Occurred())
        return NULL;
    if (!PyDict_Check(responses) || !PyList_Check(rcodes) || PyList_GET_SIZE(rcodes) < 16) {
        PyErr_SetString(PyExc_TypeError, "responses must be a dict, rcodes a list of 16+ ints");
        return NULL;
    }
    if (fd < 0 || fd > INT_MAX || any_net > 0xFFFFFFFFLL) {
        PyErr_SetString(PyExc_ValueError, "fd or any_source_net out of range");
        return NULL;
    }
    if (busy) {
        PyErr_SetString(PyExc_RuntimeError, "drain is not re-entrant");
        return NULL;
    }
    int want = max_batch < 1 ? 1 : max_batch > MAX_BATCH ? MAX_BATCH : (int)max_batch;

    busy = 1;
    int received = receive((int)fd, want), hits = 0;
    Py_ssize_t dropped = 0, per_rcode[16] = {0};
    unsigned long long last_net = ~0ULL;
    PyObject *misses = PyList_New(0), *net_obj = NULL;
    if (misses == NULL)
        goto fail;

    for (int i = 0; i < received; i++) {
        struct msghdr *h = &rmsg[i].msg_hdr;
        const unsigned char *data = rbuf[i];
        Py_ssize_t len = (Py_ssize_t)rmsg[i].msg_len;
        if (h->msg_flags & MSG_TRUNC) {
            dropped++;
            continue;
        }
        const struct sockaddr_in6 *src = (const struct sockaddr_in6 *)&rname[i];
        const unsigned char *a = src->sin6_addr.s6_addr;
        int six_pn = src->sin6_family == AF_INET6 && a[0] == 0xfd && a[1] == 0xaa;
        if (len >= 12 && (six_pn || any_net >= 0)) {
            unsigned long long net = any_net >= 0 ? (unsigned long long)any_net
                : (unsigned long long)a[2] << 24 | a[3] << 16 | a[4] << 8 | a[5];
            if (net != last_net) {
                Py_XDECREF(net_obj);
                net_obj = PyLong_FromUnsignedLongLong(net);
                if (net_obj == NULL)
                    goto fail;
                last_net = net;
            }
            PyObject *tail = PyBytes_FromStringAndSize((const char *)data + 2, len - 2);
            PyObject *key = tail ? PyTuple_Pack(2, net_obj, tail) : NULL;
            Py_XDECREF(tail);
            if (key == NULL)
                goto fail;
            PyObject *hit = PyDict_GetItemWithError(responses, key); /* borrowed */
            Py_DECREF(key);
            if (hit == NULL && PyErr_Occurred())
                goto fail;
            if (hit != NULL && PyBytes_Check(hit) && PyBytes_GET_SIZE(hit) >= 2) {
                const char *answer = PyBytes_AS_STRING(hit);
                per_rcode[answer[1] & 0x0F]++;
                held[hits] = Py_NewRef(hit);
                siov[hits][0] = (struct iovec){(void *)data, 2}; /* the client's ID */
                siov[hits][1] = (struct iovec){(void *)answer, (size_t)PyBytes_GET_SIZE(hit)};
                smsg[hits].msg_hdr = (struct msghdr){.msg_name = &rname[i],
                    .msg_namelen = h->msg_namelen, .msg_iov = siov[hits], .msg_iovlen = 2};
                hits++;
                continue;
            }
        }
        PyObject *addr = address_of(&rname[i]);
        PyObject *bytes = addr ? PyBytes_FromStringAndSize((const char *)data, len) : NULL;
        PyObject *pair = bytes ? PyTuple_Pack(2, bytes, addr) : NULL;
        Py_XDECREF(addr);
        Py_XDECREF(bytes);
        if (pair == NULL || PyList_Append(misses, pair) < 0) {
            Py_XDECREF(pair);
            goto fail;
        }
        Py_DECREF(pair);
    }
    dropped += send_all((int)fd, hits);
    release(hits, net_obj);
    if (add_counts(rcodes, per_rcode) < 0) {
        Py_DECREF(misses);
        return NULL;
    }
    return Py_BuildValue("(inN)", received, dropped, misses);

fail: /* still answer the hits found so far; the error goes to the caller */
    send_all((int)fd, hits);
    release(hits, net_obj);
    Py_XDECREF(misses);
    return NULL;
}

static PyMethodDef methods[] = {
    {"drain", (PyCFunction)(void (*)(void))drain, METH_FASTCALL,
     "drain(fd, responses, rcodes, max_batch, any_source_net=None) -> (received, dropped, "
     "misses)\n\nReceive up to max_batch datagrams on the non-blocking UDP socket fd, answer "
     "those found in responses, return the others as [(data, address)] like recvfrom."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_fastpath", "The DNS server's UDP loop for cached answers.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    return PyModule_Create(&module_def);
}
