/*
 * Instances of plain classes built through their attribute storage: build_frozen, for
 * diffai/_batch.c, _kernel.frozen, _columns.build_rows and formats/_opening.c (each module
 * compiled with its own copy).
 *
 * An instance of a plain class keeps its attributes as values beside its class's shared
 * keys. On CPython 3.11, where the class's keys begin with the fields, in order, build_frozen
 * writes the values in place, as PyObject_GenericSetAttr writes them after looking each name
 * up: 100,000 TensorStats took 3,260 instructions each that way (callgrind; 0.45-0.76 us,
 * load 1-2), 677 this way (0.23-0.30 us), the attributes, their order, vars() and equality
 * the same. The batch of small pairs builds four such objects a pair.
 *
 * The layout is CPython 3.11's own, from its internal header (hence Py_BUILD_CORE, defined
 * after Python.h and only here); any other version, or a class whose keys do not begin with
 * its fields, takes PyObject_GenericSetAttr.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_kernel.h"

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
#define IN_PLACE 1
#define Py_BUILD_CORE
#include "internal/pycore_dict.h"

/* The classes found to have shared keys that begin with their fields, at the version they
 * were found in, a reference held to each and to its fields: a 3.11 class keeps its keys
 * object for life and the keys only grow, but a class changed may have a descriptor since. */
#define LEADING 8
static struct {
    PyTypeObject *kind;
    PyObject *fields;
    unsigned int version;
} leading[LEADING];

static const unsigned long MANAGED = Py_TPFLAGS_HEAPTYPE | Py_TPFLAGS_MANAGED_DICT;

/* Whether `kind`'s shared keys begin with `fields` (interned names, compared by identity)
 * and none is a data descriptor of the class, which PyObject_GenericSetAttr would call. */
static int keys_lead(PyTypeObject *kind, PyObject *fields) {
    PyDictKeysObject *keys =
        (kind->tp_flags & MANAGED) == MANAGED ? ((PyHeapTypeObject *)kind)->ht_cached_keys : NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(fields);
    if (keys == NULL || !DK_IS_UNICODE(keys) || keys->dk_nentries < count) return 0;
    PyDictUnicodeEntry *entries = DK_UNICODE_ENTRIES(keys);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name = PyTuple_GET_ITEM(fields, i), *found = _PyType_Lookup(kind, name);
        if (entries[i].me_key != name || (found != NULL && Py_TYPE(found)->tp_descr_set != NULL))
            return 0;
    }
    return PyType_HasFeature(kind, Py_TPFLAGS_VALID_VERSION_TAG); /* set by the lookups */
}

/* Whether build_frozen may write `kind`'s values in place: once found, remembered. */
static int in_place(PyTypeObject *kind, PyObject *fields) {
    int free = -1;
    for (int i = 0; i < LEADING; i++) {
        if (leading[i].kind == kind && leading[i].fields == fields) {
            if (leading[i].version == kind->tp_version_tag) return 1;
            free = i; /* changed since: looked at again */
            break;
        }
        if (leading[i].kind == NULL && free < 0) free = i;
    }
    if (!keys_lead(kind, fields)) return 0;
    if (free >= 0) {
        Py_XSETREF(leading[free].kind, (PyTypeObject *)Py_NewRef((PyObject *)kind));
        Py_XSETREF(leading[free].fields, Py_NewRef(fields));
        leading[free].version = kind->tp_version_tag;
    }
    return 1;
}

/* An instance's values, where pycore_object.h's _PyObject_ValuesPointer finds them; NULL
 * once it has a dict instead. */
static PyDictValues *values_of(PyObject *object) {
    return ((PyDictValues **)object)[-4];
}
#endif

PyObject *build_frozen(PyTypeObject *kind, PyObject *fields, PyObject *const *values) {
    if (kind->tp_new != PyBaseObject_Type.tp_new) { /* object.__new__'s own safety check */
        PyErr_Format(PyExc_TypeError, "%s is not built by object.__new__", kind->tp_name);
        return NULL;
    }
    PyObject *empty = PyTuple_New(0);
    PyObject *built = empty ? PyBaseObject_Type.tp_new(kind, empty, NULL) : NULL;
    Py_XDECREF(empty);
    if (built == NULL) return NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(fields);
#ifdef IN_PLACE
    PyDictValues *slots = in_place(kind, fields) ? values_of(built) : NULL;
    if (slots != NULL) {
        for (Py_ssize_t i = 0; i < count; i++) {
            slots->values[i] = Py_NewRef(values[i]);
            _PyDictValues_AddToInsertionOrder(slots, i);
        }
        return built;
    }
#endif
    for (Py_ssize_t i = 0; i < count; i++) {
        if (PyObject_GenericSetAttr(built, PyTuple_GET_ITEM(fields, i), values[i]) < 0) {
            Py_DECREF(built);
            return NULL;
        }
    }
    return built;
}
