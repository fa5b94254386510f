/* The streaming fast path of ktproxy._ktscan (ext/stream.c): one SSE chunk event's
 * text delta, found and replaced in place. ktscan.c lists these functions in the
 * module's method table. */
#ifndef KTSCAN_STREAM_H
#define KTSCAN_STREAM_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* chunk_text(event, /) -> (index, text, start, end) | None; a METH_O function. */
PyObject *ktscan_chunk_text(PyObject *module, PyObject *event);
extern const char ktscan_chunk_text_doc[];

/* splice_text(event, start, end, text, /) -> bytes | None; a METH_FASTCALL function. */
PyObject *ktscan_splice_text(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
extern const char ktscan_splice_text_doc[];

#endif
