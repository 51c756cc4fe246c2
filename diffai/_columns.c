/*
 * diffai._columns: the loops over every tensor name that the derived stages cannot leave
 * to numpy (diffai/pair_columns.py, roles.py, analyses/gradient.py).
 *
 * Why C: each is a few string operations a name, which Python spends ~0.3-1 us a name
 * on (100,000 names: grouping by layer 1.2 us, the role pre-check 1.1 us, gradient's
 * block pattern 1 us); here each name is scanned in place and only the substrings kept
 * are made. Each function is the Python it replaces, character for character (tests/
 * test_columns_kernel.py holds them to it).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_kernel.h"

static int check_names(PyObject *names) {
    if (!PyList_CheckExact(names)) {
        PyErr_SetString(PyExc_TypeError, "names must be a list");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(names); i++) {
        if (!PyUnicode_Check(PyList_GET_ITEM(names, i))) {
            PyErr_SetString(PyExc_TypeError, "names must be strings");
            return -1;
        }
    }
    return 0;
}

/* layer_groups(names, root) -> (layers, numbers): group_ids(layers_of(names)), the numbers
 * as the bytes of a Py_ssize_t array. A name's layer is name.rpartition(".")[0] or root. */
static PyObject *layer_groups(PyObject *self, PyObject *args) {
    PyObject *names, *root;
    if (!PyArg_ParseTuple(args, "OU", &names, &root) || check_names(names) < 0) return NULL;
    Py_ssize_t count = PyList_GET_SIZE(names);
    PyObject *numbers = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(Py_ssize_t));
    PyObject *seen = PyDict_New();
    if (numbers == NULL || seen == NULL) goto fail;
    Py_ssize_t *out = (Py_ssize_t *)PyBytes_AS_STRING(numbers);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name = PyList_GET_ITEM(names, i);
        Py_ssize_t dot = PyUnicode_FindChar(name, '.', 0, PyUnicode_GET_LENGTH(name), -1);
        if (dot == -2) goto fail;
        PyObject *layer = dot > 0 ? PyUnicode_Substring(name, 0, dot) : Py_NewRef(root);
        if (layer == NULL) goto fail;
        PyObject *next = PyLong_FromSsize_t(PyDict_GET_SIZE(seen));
        PyObject *number = next ? PyDict_SetDefault(seen, layer, next) : NULL;
        Py_DECREF(layer);
        Py_XDECREF(next);
        if (number == NULL) goto fail;
        out[i] = PyLong_AsSsize_t(number);
    }
    PyObject *layers = PyDict_Keys(seen);
    Py_DECREF(seen);
    if (layers == NULL) {
        Py_DECREF(numbers);
        return NULL;
    }
    return Py_BuildValue("(NN)", layers, numbers);
fail:
    Py_XDECREF(numbers);
    Py_XDECREF(seen);
    return NULL;
}

/* The end of a match of \.(\d+)(?:\.|$) whose dot is at `dot`, or -1: the digits run to a
 * dot, to the end, or to a newline that ends the name (where $ also matches). */
static Py_ssize_t digits_end(int kind, const void *data, Py_ssize_t length, Py_ssize_t dot) {
    Py_ssize_t end = dot + 1;
    while (end < length && Py_UNICODE_ISDECIMAL(PyUnicode_READ(kind, data, end))) end++;
    if (end == dot + 1) return -1;
    if (end == length || PyUnicode_READ(kind, data, end) == '.') return end;
    if (end == length - 1 && PyUnicode_READ(kind, data, end) == '\n') return end;
    return -1;
}

/* block_indices(names) -> (rows, indices): the names \.(\d+)(?:\.|$) finds in (re.search:
 * the first match), and int() of each one's digits. */
static PyObject *block_indices(PyObject *self, PyObject *names) {
    if (check_names(names) < 0) return NULL;
    PyObject *rows = PyList_New(0), *indices = PyList_New(0);
    if (rows == NULL || indices == NULL) goto fail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(names); i++) {
        PyObject *name = PyList_GET_ITEM(names, i);
        int kind = PyUnicode_KIND(name);
        const void *data = PyUnicode_DATA(name);
        Py_ssize_t length = PyUnicode_GET_LENGTH(name), dot = 0, end = -1;
        for (; dot < length; dot++) {
            if (PyUnicode_READ(kind, data, dot) == '.' &&
                (end = digits_end(kind, data, length, dot)) >= 0)
                break;
        }
        if (end < 0) continue;
        PyObject *digits = PyUnicode_Substring(name, dot + 1, end);
        PyObject *index = digits ? PyLong_FromUnicodeObject(digits, 10) : NULL;
        Py_XDECREF(digits);
        PyObject *row = index ? PyLong_FromSsize_t(i) : NULL;
        int failed = row == NULL || PyList_Append(rows, row) < 0 ||
                     PyList_Append(indices, index) < 0;
        Py_XDECREF(row);
        Py_XDECREF(index);
        if (failed) goto fail;
    }
    return Py_BuildValue("(NN)", rows, indices);
fail:
    Py_XDECREF(rows);
    Py_XDECREF(indices);
    return NULL;
}

/* Whether `name` may match a role rule (roles._may_match_a_rule): its last segment among
 * `leaves`, "optim" in it, one of `ends` ending it, or its first segment one for which
 * `head_test` says so (asked once a segment: `heads` keeps the answers). */
static int may_match(PyObject *name, PyObject *leaves, Py_ssize_t longest, PyObject *word,
                     PyObject *ends, PyObject *head_test, PyObject *heads) {
    Py_ssize_t length = PyUnicode_GET_LENGTH(name);
    Py_ssize_t found = PyUnicode_Find(name, word, 0, length, 1);
    if (found != -1) return found == -2 ? -1 : 1;
    for (Py_ssize_t e = 0; e < PyTuple_GET_SIZE(ends); e++) {
        Py_ssize_t tail = PyUnicode_Tailmatch(name, PyTuple_GET_ITEM(ends, e), 0, length, 1);
        if (tail != 0) return tail < 0 ? -1 : 1;
    }
    Py_ssize_t last = PyUnicode_FindChar(name, '.', 0, length, -1);
    if (last == -2) return -1;
    if (length - last - 1 <= longest) {
        PyObject *leaf = PyUnicode_Substring(name, last + 1, length);
        int in = leaf ? PySet_Contains(leaves, leaf) : -1;
        Py_XDECREF(leaf);
        if (in != 0) return in;
    }
    Py_ssize_t first = PyUnicode_FindChar(name, '.', 0, length, 1);
    if (first == -2) return -1;
    PyObject *head = PyUnicode_Substring(name, 0, first < 0 ? length : first);
    if (head == NULL) return -1;
    PyObject *answer = PyDict_GetItemWithError(heads, head); /* borrowed */
    if (answer == NULL && !PyErr_Occurred()) {
        PyObject *asked = PyObject_CallOneArg(head_test, head);
        if (asked != NULL && PyDict_SetItem(heads, head, asked) == 0) answer = asked;
        Py_XDECREF(asked); /* the dict holds it */
    }
    Py_DECREF(head);
    return answer == NULL ? -1 : PyObject_IsTrue(answer);
}

/* may_match_rows(names, leaves, longest_leaf, word, ends, head_test) -> the rows of the
 * names a role rule may match. */
static PyObject *may_match_rows(PyObject *self, PyObject *args) {
    PyObject *names, *leaves, *word, *ends, *head_test;
    Py_ssize_t longest;
    if (!PyArg_ParseTuple(args, "OO!nUO!O", &names, &PyFrozenSet_Type, &leaves, &longest,
                          &word, &PyTuple_Type, &ends, &head_test) ||
        check_names(names) < 0)
        return NULL;
    PyObject *rows = PyList_New(0), *heads = PyDict_New();
    if (rows == NULL || heads == NULL) goto fail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(names); i++) {
        int may = may_match(PyList_GET_ITEM(names, i), leaves, longest, word, ends,
                            head_test, heads);
        if (may < 0) goto fail;
        if (may) {
            PyObject *row = PyLong_FromSsize_t(i);
            int failed = row == NULL || PyList_Append(rows, row) < 0;
            Py_XDECREF(row);
            if (failed) goto fail;
        }
    }
    Py_DECREF(heads);
    return rows;
fail:
    Py_XDECREF(rows);
    Py_XDECREF(heads);
    return NULL;
}

/* The rows of `columns` (a tuple of lists of one length), each row a tuple of borrowed
 * items in `row`; -1 with an error set when the lengths differ. */
static Py_ssize_t column_rows(PyObject *columns) {
    if (!PyTuple_Check(columns) || PyTuple_GET_SIZE(columns) == 0) {
        PyErr_SetString(PyExc_TypeError, "columns must be a non-empty tuple of lists");
        return -1;
    }
    Py_ssize_t rows = -1;
    for (Py_ssize_t c = 0; c < PyTuple_GET_SIZE(columns); c++) {
        PyObject *column = PyTuple_GET_ITEM(columns, c);
        if (!PyList_CheckExact(column) || (rows >= 0 && PyList_GET_SIZE(column) != rows)) {
            PyErr_SetString(PyExc_ValueError, "columns must be lists of one length");
            return -1;
        }
        rows = PyList_GET_SIZE(column);
    }
    return rows;
}

/* The most fields of an object build_rows builds. */
#define ROW_FIELDS 16

/* One object a row: `kind` built past its __init__ by build_frozen (diffai/_instances.c, as
 * _kernel.frozen builds a frozen dataclass), each of `fields` the row's item in that column,
 * or, when `kind` is dict, {field: item}. */
static PyObject *build_rows(PyObject *self, PyObject *args) {
    PyTypeObject *kind;
    PyObject *fields, *columns;
    if (!PyArg_ParseTuple(args, "O!O!O", &PyType_Type, &kind, &PyTuple_Type, &fields,
                          &columns))
        return NULL;
    Py_ssize_t rows = column_rows(columns), count = PyTuple_GET_SIZE(fields);
    if (rows < 0) return NULL;
    if (count != PyTuple_GET_SIZE(columns) || count > ROW_FIELDS) {
        PyErr_SetString(PyExc_ValueError, "a field a column, at most 16");
        return NULL;
    }
    int as_dict = kind == &PyDict_Type;
    PyObject *built = PyList_New(rows), *values[ROW_FIELDS];
    if (built == NULL) return NULL;
    for (Py_ssize_t r = 0; r < rows; r++) {
        /* Held: a field's setter, on the generic path, runs Python that could drop them. */
        for (Py_ssize_t f = 0; f < count; f++)
            values[f] = Py_NewRef(PyList_GET_ITEM(PyTuple_GET_ITEM(columns, f), r));
        PyObject *row = as_dict ? PyDict_New() : build_frozen(kind, fields, values);
        int set = row != NULL;
        for (Py_ssize_t f = 0; set && as_dict && f < count; f++)
            set = PyDict_SetItem(row, PyTuple_GET_ITEM(fields, f), values[f]) == 0;
        for (Py_ssize_t f = 0; f < count; f++) Py_DECREF(values[f]);
        if (row == NULL) goto fail;
        PyList_SET_ITEM(built, r, row);
        if (!set) goto fail;
    }
    return built;
fail:
    Py_DECREF(built);
    return NULL;
}

/* set_each(objects, name, values): object.__setattr__(o, name, v) for each pair. */
static PyObject *set_each(PyObject *self, PyObject *args) {
    PyObject *objects, *name, *values;
    if (!PyArg_ParseTuple(args, "O!UO!", &PyList_Type, &objects, &name, &PyList_Type, &values))
        return NULL;
    if (PyList_GET_SIZE(objects) != PyList_GET_SIZE(values)) {
        PyErr_SetString(PyExc_ValueError, "a value an object");
        return NULL;
    }
    /* Both sizes read each time: a setter or an old value's __del__ runs Python. */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(objects) && i < PyList_GET_SIZE(values); i++) {
        if (PyObject_GenericSetAttr(PyList_GET_ITEM(objects, i), name,
                                    PyList_GET_ITEM(values, i)) < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef columns_methods[] = {
    {"build_rows", build_rows, METH_VARARGS, "one frozen object or dict a row of columns"},
    {"set_each", set_each, METH_VARARGS, "object.__setattr__ of one name on each object"},
    {"layer_groups", layer_groups, METH_VARARGS, "group_ids(layers_of(names))"},
    {"block_indices", block_indices, METH_O, "gradient's block pattern over names"},
    {"may_match_rows", may_match_rows, METH_VARARGS, "the names a role rule may match"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef columns_module = {
    PyModuleDef_HEAD_INIT, "diffai._columns",
    "The derived stages' loops over tensor names (diffai/_columns.c).", -1, columns_methods,
};

PyMODINIT_FUNC PyInit__columns(void) { return PyModule_Create(&columns_module); }
