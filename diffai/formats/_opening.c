/*
 * diffai.formats._opening: what opening a model costs per tensor, in C. A compactly written
 * safetensors header read as columns and a mapped file's tensor references (for
 * diffai/formats/safetensors_header.py and safetensors.py), and the checks every model
 * passes (diffai/formats/limits.py) over its names and tensor kinds.
 *
 * Why in C: the Python around a header of many small tensors was most of opening a model.
 * At 100,000 entries of 8 x 8 f32 (CPU seconds, medians of 5, load 4): the columns 0.31 s
 * as pieces of a split, slices, regexes and numpy over the offsets, 0.085 s read here in one
 * pass; one side's references 0.29 s (a functools.partial, an object and its instance dict
 * each, from Python), 0.11 s here, each built past the frozen dataclass's __init__ with the
 * attributes the Python set.
 *
 * The header is untrusted. columns() reads only inside the text's UTF-8 buffer and answers
 * the columns the strict parse would read, or None whenever the text is not exactly the
 * compact form (the strict parse then decides, with its message):
 * each entry "NAME":{"dtype":"DT","shape"SHAPE"data_offsets":[N,N]} and a comma between
 * entries, a name without '"', '\', control characters or repeats, N of at most 18 digits
 * without leading zeros, and the offsets tiling the data region. DT and SHAPE go to
 * layout_of (safetensors_header._layout, which checks them) once per distinct text.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "../_kernel.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Where the reader is in the header's bytes. */
typedef struct {
    const char *at, *end;
} Cursor;

/* An entry's data offsets (sorted by them when the header lists them out of order). */
typedef struct {
    int64_t begin, end;
} Span;

/* What header_columns() builds while it reads; the lists hold new references. The last
 * entry's kind text and layout (borrowed from kinds) are kept: most entries repeat it. */
typedef struct {
    PyObject *names, *layouts, *kinds, *seen, *layout_of;
    Span *spans;
    Py_ssize_t count, room;
    const char *last_kind;
    Py_ssize_t last_length;
    PyObject *last_layout;
} Read;

static int literal(Cursor *cursor, const char *text, size_t length) {
    if ((size_t)(cursor->end - cursor->at) < length || memcmp(cursor->at, text, length) != 0)
        return 0;
    cursor->at += length;
    return 1;
}

#define LITERAL(cursor, text) literal(cursor, text, sizeof(text) - 1)

/* The bytes up to the next '"', which is passed over: 0 when there is none. */
static int up_to_quote(Cursor *cursor, const char **start, Py_ssize_t *length) {
    const char *quote = memchr(cursor->at, '"', (size_t)(cursor->end - cursor->at));
    if (quote == NULL) return 0;
    *start = cursor->at;
    *length = quote - cursor->at;
    cursor->at = quote + 1;
    return 1;
}

/* 0 or [1-9][0-9]{0,17}: under 10**18, so every sum of two fits in an int64. */
static int number(Cursor *cursor, int64_t *value) {
    const char *first = cursor->at;
    int64_t read = 0;
    while (cursor->at < cursor->end && *cursor->at >= '0' && *cursor->at <= '9') {
        if (cursor->at - first == 18) return 0;
        read = read * 10 + (*cursor->at++ - '0');
    }
    *value = read;
    return cursor->at > first && (*first != '0' || cursor->at == first + 1);
}

/* A name as the strict parse would keep it: no escape, no control character. */
static int plain_name(const char *name, Py_ssize_t length) {
    for (Py_ssize_t i = 0; i < length; i++) {
        unsigned char byte = (unsigned char)name[i];
        if (byte < 0x20 || byte == 0x7f || byte == '\\') return 0;
    }
    return !(length == 12 && memcmp(name, "__metadata__", 12) == 0);
}

/* 1 when the name is new (and kept), 0 when it repeats or is refused, -1 on an error. */
static int add_name(Read *read, const char *start, Py_ssize_t length) {
    if (!plain_name(start, length)) return 0;
    PyObject *name = PyUnicode_DecodeUTF8(start, length, "strict");
    if (name == NULL) return -1;
    Py_ssize_t before = PySet_GET_SIZE(read->seen);
    int kept = PySet_Add(read->seen, name) == 0 && PyList_Append(read->names, name) == 0;
    Py_DECREF(name);
    if (!kept) return -1;
    return PySet_GET_SIZE(read->seen) > before;
}

/* The layout of the text `kind` (DT","shape"SHAPE), from layout_of once per distinct text;
 * a borrowed reference, Py_None when refused, NULL on an error. */
static PyObject *layout_for(Read *read, const char *kind, Py_ssize_t dtype_length,
                            Py_ssize_t length) {
    if (read->last_layout != NULL && length == read->last_length &&
        memcmp(kind, read->last_kind, (size_t)length) == 0)
        return read->last_layout; /* 100,000 entries of one kind: 307 -> 246 M instructions */
    PyObject *key = PyBytes_FromStringAndSize(kind, length);
    if (key == NULL) return NULL;
    PyObject *layout = PyDict_GetItemWithError(read->kinds, key);
    if (layout == NULL && !PyErr_Occurred()) {
        const char *shape = kind + dtype_length + sizeof("\",\"shape\"") - 1;
        PyObject *found = PyObject_CallFunction(read->layout_of, "s#s#", kind, dtype_length,
                                                shape, (Py_ssize_t)(kind + length - shape));
        int ok = found != NULL && (found == Py_None || (PyTuple_Check(found) &&
                                                        PyTuple_GET_SIZE(found) == 4));
        if (found != NULL && !ok) PyErr_SetString(PyExc_TypeError, "layout_of gives a Layout");
        if (ok && PyDict_SetItem(read->kinds, key, found) == 0) layout = found;
        Py_XDECREF(found);
    }
    Py_DECREF(key);
    if (layout != NULL) {
        read->last_kind = kind, read->last_length = length, read->last_layout = layout;
    }
    return layout;
}

static int keep_span(Read *read, int64_t begin, int64_t end) {
    if (read->count == read->room) {
        Py_ssize_t room = read->room ? 2 * read->room : 1024;
        Span *grown = PyMem_Realloc(read->spans, (size_t)room * sizeof *grown);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        read->spans = grown;
        read->room = room;
    }
    read->spans[read->count++] = (Span){begin, end};
    return 0;
}

/* One entry "NAME":{...} from the cursor: 1 read, 0 not of the compact form, -1 an error. */
static int entry(Read *read, Cursor *cursor) {
    const char *name, *kind, *shape;
    Py_ssize_t name_length, dtype_length, shape_length;
    int64_t begin, end;
    if (!(LITERAL(cursor, "\"") && up_to_quote(cursor, &name, &name_length))) return 0;
    int named = add_name(read, name, name_length);
    if (named != 1) return named;
    if (!(LITERAL(cursor, ":{\"dtype\":\"") && up_to_quote(cursor, &kind, &dtype_length) &&
          LITERAL(cursor, ",\"shape\"") && up_to_quote(cursor, &shape, &shape_length) &&
          LITERAL(cursor, "data_offsets\":[") && number(cursor, &begin) &&
          LITERAL(cursor, ",") && number(cursor, &end) && LITERAL(cursor, "]}")))
        return 0;
    PyObject *layout = layout_for(read, kind, dtype_length, shape + shape_length - kind);
    if (layout == NULL) return -1;
    if (layout == Py_None) return 0;
    long long nbytes = PyLong_AsLongLong(PyTuple_GET_ITEM(layout, 3));
    if (nbytes == -1 && PyErr_Occurred()) return -1;
    if (end - begin != nbytes) return 0;
    if (PyList_Append(read->layouts, layout) < 0 || keep_span(read, begin, end) < 0) return -1;
    return 1;
}

static int by_offsets(const void *one, const void *other) {
    const Span *a = one, *b = other;
    if (a->begin != b->begin) return a->begin < b->begin ? -1 : 1;
    return a->end < b->end ? -1 : a->end > b->end;
}

/* Whether the spans, in this order, cover 0..data_len with no gap or overlap. */
static int follow_on(const Span *spans, Py_ssize_t count, int64_t data_len) {
    int64_t position = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (spans[i].begin != position) return 0;
        position = spans[i].end;
    }
    return position == data_len;
}

/* Whether the entries, ordered by offsets, tile the data region (sorted only when needed). */
static int tiles(const Read *read, int64_t data_len, int *tiled) {
    *tiled = follow_on(read->spans, read->count, data_len);
    if (*tiled) return 0;
    Span *sorted = PyMem_Malloc((size_t)read->count * sizeof *sorted);
    if (sorted == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(sorted, read->spans, (size_t)read->count * sizeof *sorted);
    qsort(sorted, (size_t)read->count, sizeof *sorted, by_offsets);
    *tiled = follow_on(sorted, read->count, data_len);
    PyMem_Free(sorted);
    return 0;
}

/* Every entry from the cursor to the end: 1 read, 0 not of the compact form, -1 an error. */
static int entries(Read *read, Cursor *cursor) {
    int found;
    do {
        found = entry(read, cursor);
    } while (found == 1 && cursor->at < cursor->end && LITERAL(cursor, ","));
    return found == 1 ? cursor->at == cursor->end : found;
}

static PyObject *offsets_list(const Read *read, int ends) {
    PyObject *list = PyList_New(read->count);
    for (Py_ssize_t i = 0; list != NULL && i < read->count; i++) {
        PyObject *offset = PyLong_FromLongLong(ends ? read->spans[i].end : read->spans[i].begin);
        if (offset == NULL) Py_CLEAR(list);
        else PyList_SET_ITEM(list, i, offset);
    }
    return list;
}

/* The columns once every entry is read and the data tiled: a new tuple, or Py_None. */
static PyObject *answer(Read *read, int read_all, int64_t data_len) {
    int tiled = 0;
    if (read_all != 1) return read_all < 0 ? NULL : Py_NewRef(Py_None);
    if (tiles(read, data_len, &tiled) < 0) return NULL;
    if (!tiled) return Py_NewRef(Py_None);
    PyObject *begins = offsets_list(read, 0);
    PyObject *ends = begins ? offsets_list(read, 1) : NULL;
    PyObject *columns = ends ? PyTuple_Pack(4, read->names, read->layouts, begins, ends) : NULL;
    Py_XDECREF(begins);
    Py_XDECREF(ends);
    return columns;
}

/* The byte where character `start` of `text` begins in its UTF-8; -1 on an error. */
static Py_ssize_t utf8_offset(PyObject *text, Py_ssize_t start) {
    if (PyUnicode_IS_ASCII(text)) return start;
    PyObject *head = PyUnicode_Substring(text, 0, start);
    Py_ssize_t length = -1;
    if (head != NULL && PyUnicode_AsUTF8AndSize(head, &length) == NULL) length = -1;
    Py_XDECREF(head);
    return length;
}

PyDoc_STRVAR(header_columns_doc,
             "header_columns(header, start, data_len, layout_of) -> (names, layouts, begins, ends) or None\n\n"
             "The entries of a compact header (trailing whitespace stripped) from character\n"
             "`start`, the comma or opening brace before the first entry, to its closing brace:\n"
             "None unless every entry is of the compact form, names are plain and distinct,\n"
             "each layout_of(DT, SHAPE) is a Layout whose bytes its offsets span, and the\n"
             "offsets tile data_len bytes.");

static PyObject *header_columns(PyObject *module, PyObject *args) {
    PyObject *header, *layout_of, *data_len_object;
    Py_ssize_t start, length;
    if (!PyArg_ParseTuple(args, "UnOO", &header, &start, &data_len_object, &layout_of))
        return NULL;
    if (start < 0 || start > PyUnicode_GET_LENGTH(header)) {
        PyErr_SetString(PyExc_ValueError, "header_columns: start is outside the header");
        return NULL;
    }
    long long data_len = PyLong_AsLongLong(data_len_object);
    if (data_len == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return NULL;
        PyErr_Clear(); /* no 18-digit offsets reach past an int64 */
        Py_RETURN_NONE;
    }
    const char *text = PyUnicode_AsUTF8AndSize(header, &length);
    Py_ssize_t first = text ? utf8_offset(header, start) : -1;
    if (first < 0) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeError)) return NULL;
        PyErr_Clear(); /* a lone surrogate: no file's UTF-8 holds one */
        Py_RETURN_NONE;
    }
    if (first + 1 >= length || text[length - 1] != '}') Py_RETURN_NONE;
    Cursor cursor = {text + first + 1, text + length - 1};
    Read read = {PyList_New(0), PyList_New(0), PyDict_New(), PySet_New(NULL), layout_of};
    PyObject *found = NULL;
    if (read.names && read.layouts && read.kinds && read.seen)
        found = answer(&read, entries(&read, &cursor), data_len);
    Py_XDECREF(read.names);
    Py_XDECREF(read.layouts);
    Py_XDECREF(read.kinds);
    Py_XDECREF(read.seen);
    PyMem_Free(read.spans);
    return found;
}

/* The attributes a mapped tensor's reference gets, in the order the Python set them. */
enum Attribute { NAME, SHAPE, DTYPE, LOAD, ELEMENTS, NBYTES, ATTRIBUTES };
static const char *const ATTRIBUTE_TEXT[ATTRIBUTES] = {
    "name", "shape", "dtype", "load", "elements", "nbytes",
};
static PyObject *attribute_names[ATTRIBUTES];
static PyObject *attribute_fields; /* the names as a tuple, for build_frozen */
static PyObject *partial_kind; /* functools.partial */

/* kind's object with the attributes of a Layout (dtype, shape, elements, nbytes). */
static PyObject *reference(PyTypeObject *kind, PyObject *name, PyObject *layout, PyObject *load) {
    PyObject *values[ATTRIBUTES] = {
        name, PyTuple_GET_ITEM(layout, 1), PyTuple_GET_ITEM(layout, 0), load,
        PyTuple_GET_ITEM(layout, 2), PyTuple_GET_ITEM(layout, 3),
    };
    return build_frozen(kind, attribute_fields, values); /* diffai/_instances.c */
}

/* Entry i's reference, its load partial(view, data, begin, end, layout); NULL on an error. */
static PyObject *mapped_ref(PyObject *const *args, Py_ssize_t i) {
    PyObject *layout = PyList_GET_ITEM(args[2], i);
    if (!PyTuple_Check(layout) || PyTuple_GET_SIZE(layout) != 4) {
        PyErr_SetString(PyExc_TypeError, "mapped_refs: layouts are Layouts");
        return NULL;
    }
    PyObject *bound = PyTuple_Pack(5, args[6], args[5], PyList_GET_ITEM(args[3], i),
                                   PyList_GET_ITEM(args[4], i), layout);
    PyObject *load = bound ? PyObject_Call(partial_kind, bound, NULL) : NULL;
    Py_XDECREF(bound);
    PyObject *ref = load ? reference((PyTypeObject *)args[0], PyList_GET_ITEM(args[1], i), layout,
                                     load)
                         : NULL;
    Py_XDECREF(load);
    return ref;
}

/* A dict for `count` entries, sized once: 0.06 s less than through the resizes of a growing
 * one at 100,000 references (0.14 against 0.20 s, load 4, medians of 5); lookups no slower. */
static PyObject *new_dict(Py_ssize_t count) {
#if PY_VERSION_HEX < 0x030D0000
    return _PyDict_NewPresized(count);
#else
    (void)count; /* private since 3.13 */
    return PyDict_New();
#endif
}

PyDoc_STRVAR(mapped_refs_doc,
             "mapped_refs(kind, names, layouts, begins, ends, data, view) -> {name: ref}\n\n"
             "A `kind` object per entry, built past its __init__, with the attributes name,\n"
             "shape, dtype, load, elements and nbytes (from the entry's Layout), its load\n"
             "partial(view, data, begin, end, layout).");

static PyObject *mapped_refs(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    int lists = nargs == 7 && PyType_Check(args[0]);
    for (int i = 1; lists && i < 5; i++) lists = PyList_Check(args[i]);
    Py_ssize_t count = lists ? PyList_GET_SIZE(args[1]) : 0;
    for (int i = 2; lists && i < 5; i++) lists = PyList_GET_SIZE(args[i]) == count;
    if (!lists) {
        PyErr_SetString(PyExc_TypeError,
                        "mapped_refs takes a type, four lists of one length, data and view");
        return NULL;
    }
    PyObject *refs = new_dict(count);
    for (Py_ssize_t i = 0; refs != NULL && i < count; i++) {
        PyObject *ref = mapped_ref(args, i);
        if (ref == NULL || PyDict_SetItem(refs, PyList_GET_ITEM(args[1], i), ref) < 0)
            Py_CLEAR(refs);
        Py_XDECREF(ref);
    }
    return refs;
}

/* Entries of a kind counted while its objects come one after another: identical attributes
 * (the same objects, so equal ones) are one kind without building or hashing a key. */
enum { KIND_PARTS = 4, RECENT = 8 };
typedef struct {
    PyObject *parts[KIND_PARTS]; /* new references */
    Py_ssize_t count;
} Recent;

static const char *const KIND_TEXT[KIND_PARTS] = {"shape", "dtype", "stored_as", "stored_size"};
static PyObject *kind_names[KIND_PARTS];

/* The recent kinds' counts added into `kinds` (when `keep`), and the recent kinds forgotten:
 * 0, or -1 with an exception set. */
static int flush(PyObject *kinds, Recent *recent, int *held, int keep) {
    int failed = !keep;
    for (int i = 0; i < *held; i++) {
        PyObject *key = failed ? NULL : PyTuple_New(KIND_PARTS);
        for (int part = 0; part < KIND_PARTS; part++) {
            if (key != NULL) PyTuple_SET_ITEM(key, part, recent[i].parts[part]);
            else Py_DECREF(recent[i].parts[part]);
        }
        PyObject *known = key ? PyDict_GetItemWithError(kinds, key) : NULL;
        Py_ssize_t before = known ? PyLong_AsSsize_t(known) : 0;
        PyObject *count = key && !PyErr_Occurred() ? PyLong_FromSsize_t(before + recent[i].count)
                                                   : NULL;
        failed = failed || count == NULL || PyDict_SetItem(kinds, key, count) < 0;
        Py_XDECREF(count);
        Py_XDECREF(key);
    }
    *held = 0;
    return keep && failed ? -1 : 0;
}

/* Counts `ref`'s kind among the recent ones: 0, or -1 with an exception set. */
static int count_kind(PyObject *kinds, Recent *recent, int *held, PyObject *ref) {
    PyObject *parts[KIND_PARTS];
    for (int part = 0; part < KIND_PARTS; part++) {
        parts[part] = PyObject_GetAttr(ref, kind_names[part]);
        if (parts[part] == NULL) {
            while (part--) Py_DECREF(parts[part]);
            return -1;
        }
    }
    for (int i = 0; i < *held; i++) {
        if (memcmp(recent[i].parts, parts, sizeof parts) == 0) {
            recent[i].count++;
            for (int part = 0; part < KIND_PARTS; part++) Py_DECREF(parts[part]);
            return 0;
        }
    }
    if (*held == RECENT && flush(kinds, recent, held, 1) < 0) {
        for (int part = 0; part < KIND_PARTS; part++) Py_DECREF(parts[part]);
        return -1;
    }
    memcpy(recent[*held].parts, parts, sizeof parts);
    recent[(*held)++].count = 1;
    return 0;
}

PyDoc_STRVAR(tensor_kinds_doc,
             "tensor_kinds(refs) -> {(shape, dtype, stored_as, stored_size): count}\n\n"
             "How many of the tensor references are of each kind, as collections.Counter of\n"
             "those attributes would count them.");

static PyObject *tensor_kinds(PyObject *module, PyObject *refs) {
    PyObject *kinds = PyDict_New();
    PyObject *each = kinds ? PyObject_GetIter(refs) : NULL;
    Recent recent[RECENT];
    int held = 0, failed = each == NULL;
    PyObject *ref;
    while (!failed && (ref = PyIter_Next(each)) != NULL) {
        failed = count_kind(kinds, recent, &held, ref) < 0;
        Py_DECREF(ref);
    }
    failed = failed || PyErr_Occurred() != NULL;
    failed = flush(kinds, recent, &held, !failed) < 0 || failed;
    Py_XDECREF(each);
    if (failed) Py_CLEAR(kinds);
    return kinds;
}

PyDoc_STRVAR(plain_names_doc,
             "plain_names(names, longest) -> bool\n\n"
             "Whether every name is printable ASCII of at most `longest` characters, read in\n"
             "place (no joined copy of them all).");

static PyObject *plain_names(PyObject *module, PyObject *args) {
    PyObject *names;
    Py_ssize_t longest;
    if (!PyArg_ParseTuple(args, "O!n", &PyList_Type, &names, &longest)) return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(names); i++) {
        PyObject *name = PyList_GET_ITEM(names, i);
        if (!PyUnicode_Check(name) || !PyUnicode_IS_ASCII(name) ||
            PyUnicode_GET_LENGTH(name) > longest)
            Py_RETURN_FALSE;
        const Py_UCS1 *text = PyUnicode_1BYTE_DATA(name);
        for (Py_ssize_t at = 0; at < PyUnicode_GET_LENGTH(name); at++) {
            if (text[at] < 0x20 || text[at] > 0x7e) Py_RETURN_FALSE;
        }
    }
    Py_RETURN_TRUE;
}

static PyMethodDef methods[] = {
    {"header_columns", header_columns, METH_VARARGS, header_columns_doc},
    {"mapped_refs", (PyCFunction)(void (*)(void))mapped_refs, METH_FASTCALL, mapped_refs_doc},
    {"tensor_kinds", tensor_kinds, METH_O, tensor_kinds_doc},
    {"plain_names", plain_names, METH_VARARGS, plain_names_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "diffai.formats._opening",
    "What opening a model costs per tensor, in C (see _opening.c).", -1, methods, NULL, NULL,
    NULL, NULL,
};

static int intern_all(PyObject **interned, const char *const *text, int count) {
    for (int i = 0; i < count; i++) {
        if ((interned[i] = PyUnicode_InternFromString(text[i])) == NULL) return -1;
    }
    return 0;
}

PyMODINIT_FUNC PyInit__opening(void) {
    if (intern_all(attribute_names, ATTRIBUTE_TEXT, ATTRIBUTES) < 0 ||
        intern_all(kind_names, KIND_TEXT, KIND_PARTS) < 0)
        return NULL;
    attribute_fields = PyTuple_New(ATTRIBUTES);
    for (int i = 0; attribute_fields != NULL && i < ATTRIBUTES; i++)
        PyTuple_SET_ITEM(attribute_fields, i, Py_NewRef(attribute_names[i]));
    if (attribute_fields == NULL) return NULL;
    PyObject *functools = PyImport_ImportModule("functools");
    partial_kind = functools ? PyObject_GetAttrString(functools, "partial") : NULL;
    Py_XDECREF(functools);
    return partial_kind ? PyModule_Create(&module_def) : NULL;
}
