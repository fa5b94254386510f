/* The text normaliser of ktproxy._ktscan (ext/normalize.c); ktscan.c lists these
 * functions in the module's method table. */
#ifndef KTSCAN_NORMALIZE_H
#define KTSCAN_NORMALIZE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* normalize(text, /) -> str; a METH_O function. */
PyObject *ktscan_normalize(PyObject *module, PyObject *text);
extern const char ktscan_normalize_doc[];

/* normalize_with_offsets(text, /) -> (str, list[int]); a METH_O function. */
PyObject *ktscan_normalize_with_offsets(PyObject *module, PyObject *text);
extern const char ktscan_normalize_with_offsets_doc[];

#endif
