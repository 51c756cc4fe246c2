/*
 * diffai._records.tensor_records: the report's per-tensor records, built from the comparison.
 *
 * Each TensorComparison becomes the dict diffai/report.py's tensor_record gives for it, made
 * the same way: a copy of each side's and the diff's attribute dict (vars()), a side's shape
 * made a list and its layout, nnz and quantization deleted, the diff's relative change added,
 * non-finite floats made None as _strict makes them. A tensor this file does not build the same
 * way for certain (renamed, sparse, quantized, attributes not in their fields' order, a value
 * of an unexpected type, a non-finite value whose fate _strict's float sum decides) is given
 * to that Python function instead, so both ways give one record.
 *
 * Why in C: in Python each pair took ~30,000 instructions (callgrind; 10.4 us at 100,000
 * pairs), most of them the interpreter's around four dicts. Reading each attribute by
 * PyObject_GetAttr and inserting it into a new dict still took ~22,000 (~200 a read, ~200 an
 * insertion); reading the attribute dict in order and copying it, as vars().copy() does,
 * takes ~12,500 (6.2 us).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>

/* What a record does with an attribute (report.py's _form gives them, in field order). */
enum Kind {
    AS_IS,   /* kept */
    FLOAT,   /* kept, one of the float fields _strict's sum judges */
    LISTED,  /* kept as a list of its items */
    DROPPED, /* left out; None, else the record is Python's */
};

/* A TensorStats' or DiffStats' attributes, in field order, and what the record does with each. */
#define MOST_FIELDS 32
typedef struct {
    PyObject *names; /* tuple of str */
    Py_ssize_t count;
    enum Kind kinds[MOST_FIELDS];
} Form;

/* What report.py gives each call: the two forms and the record function for the rest. */
typedef struct {
    Form side, diff;
    PyObject *fallback; /* tensor_record(tensor, change) */
} Layout;

/* The attribute and key names read, interned once. */
enum Name {
    NAME, STATUS, ROLE, BASELINE, CANDIDATE, DIFF, RENAME, VALUE, BASIS, RELATIVE_CHANGE,
    RELATIVE_BASIS, NONE_BASIS, GET, NAMES
};
static const char *const NAME_TEXT[NAMES] = {
    "name", "status", "role", "baseline", "candidate", "diff", "rename", "value", "basis",
    "relative_change", "relative_basis", "none", "get",
};
static PyObject *names[NAMES];

/* What building one record came to: built, left to the fallback, or an error set. */
enum Outcome { FAILED = -1, LEFT = 0, BUILT = 1 };

/* Whether a value is a float that is not finite (what _strict makes None). The exact types
 * first: PyFloat_Check alone calls PyType_IsSubtype for every int and str (~6 a record). */
static int non_finite(PyObject *value) {
    if (PyFloat_CheckExact(value)) return !isfinite(PyFloat_AS_DOUBLE(value));
    if (value == Py_None || PyLong_CheckExact(value) || PyUnicode_CheckExact(value)) return 0;
    return PyFloat_Check(value) && !isfinite(PyFloat_AS_DOUBLE(value));
}

/* The object's attribute dict (a new reference) with its values, borrowed, in `values`; LEFT
 * when its attributes are not the form's fields in their order (or it has no such dict). */
static enum Outcome read_fields(const Form *form, PyObject *object, PyObject **dict,
                                PyObject **values) {
    *dict = PyObject_GenericGetDict(object, NULL);
    if (*dict == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return FAILED;
        PyErr_Clear();
        return LEFT;
    }
    Py_ssize_t position = 0, count = 0;
    PyObject *key, *value;
    while (PyDict_Next(*dict, &position, &key, &value)) {
        PyObject *expected = count < form->count ? PyTuple_GET_ITEM(form->names, count) : NULL;
        if (key != expected && (expected == NULL || !PyUnicode_Check(key) ||
                                PyUnicode_Compare(key, expected) != 0))
            return LEFT;
        values[count++] = value;
    }
    return count == form->count ? BUILT : LEFT;
}

/* What _strict does with a record's values: keeps them, nulls its non-finite floats (a float
 * field is None or not finite: its sum fails), or cannot be told without its sum: the float
 * fields are finite, their sum may overflow, and then _strict nulls the record's other
 * non-finite floats (`others` are the values the record adds, as the diff's relative change).
 * PYTHON's, too, are a float field holding anything but a float or None and a field left out
 * that is not None. */
enum Strict { PYTHON = -1, KEEP = 0, NULLED = 1 };

static enum Strict strict_of(const Form *form, PyObject *const *values, PyObject *const *others,
                             Py_ssize_t other_count) {
    int judged = 0, other = 0;
    for (Py_ssize_t i = 0; i < form->count; i++) {
        PyObject *value = values[i];
        switch (form->kinds[i]) {
        case FLOAT:
            if (value != Py_None && !PyFloat_CheckExact(value)) return PYTHON;
            judged = judged || value == Py_None || non_finite(value);
            break;
        case DROPPED:
            if (value != Py_None) return PYTHON;
            break;
        default:
            other = other || non_finite(value);
        }
    }
    for (Py_ssize_t i = 0; i < other_count; i++) other = other || non_finite(others[i]);
    return judged ? NULLED : other ? PYTHON : KEEP;
}

/* `record[key] = value`, the value a new reference (stolen). */
static int put(PyObject *record, PyObject *key, PyObject *value) {
    int result = value == NULL ? -1 : PyDict_SetItem(record, key, value);
    Py_XDECREF(value);
    return result;
}

/* The copy of `dict` made the record: lists, deletions and (when `strict`) None for
 * non-finite floats, `values` being the dict's. */
static int shape_record(const Form *form, PyObject *record, PyObject *const *values,
                        enum Strict strict) {
    for (Py_ssize_t i = 0; i < form->count; i++) {
        PyObject *name = PyTuple_GET_ITEM(form->names, i);
        int failed = 0;
        if (form->kinds[i] == LISTED)
            failed = put(record, name, PySequence_List(values[i]));
        else if (form->kinds[i] == DROPPED)
            failed = PyDict_DelItem(record, name);
        else if (strict == NULLED && non_finite(values[i]))
            failed = PyDict_SetItem(record, name, Py_None);
        if (failed) return 0;
    }
    return 1;
}

/* `object`'s record in `form`, with `extra` values (borrowed) added under `extra_keys`; None for
 * None. */
static enum Outcome form_record(const Form *form, PyObject *object, PyObject *const *extra,
                                PyObject *const *extra_keys, Py_ssize_t extras,
                                PyObject **record) {
    if (object == Py_None) {
        *record = Py_NewRef(Py_None);
        return BUILT;
    }
    PyObject *dict, *values[MOST_FIELDS];
    enum Outcome outcome = read_fields(form, object, &dict, values);
    enum Strict strict = outcome == BUILT ? strict_of(form, values, extra, extras) : KEEP;
    if (strict == PYTHON) outcome = LEFT;
    if (outcome == BUILT) {
        *record = PyDict_Copy(dict);
        int shaped = *record != NULL && shape_record(form, *record, values, strict);
        for (Py_ssize_t i = 0; shaped && i < extras; i++) {
            PyObject *value = strict == NULLED && non_finite(extra[i]) ? Py_None : extra[i];
            shaped = PyDict_SetItem(*record, extra_keys[i], value) == 0;
        }
        if (!shaped) Py_CLEAR(*record);
        outcome = shaped ? BUILT : FAILED;
    }
    Py_XDECREF(dict);
    return outcome;
}

/* The tensor's relative change (a new reference, None when it has none). */
static PyObject *change_of(PyObject *changes, PyObject *name) {
    if (!PyDict_CheckExact(changes)) return PyObject_CallMethodOneArg(changes, names[GET], name);
    PyObject *change = PyDict_GetItemWithError(changes, name);
    return change != NULL ? Py_NewRef(change) : PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
}

/* The diff's record: its figures, then the relative change and what it is measured against. */
static enum Outcome diff_record(const Form *form, PyObject *diff, PyObject *change,
                                PyObject **record) {
    if (diff == Py_None) { /* as diff_record in Python: no figures, the change unread */
        *record = Py_NewRef(Py_None);
        return BUILT;
    }
    PyObject *extra[2] = {Py_NewRef(Py_None), Py_NewRef(names[NONE_BASIS])};
    if (change != Py_None) {
        Py_SETREF(extra[0], PyObject_GetAttr(change, names[VALUE]));
        if (extra[0] != NULL) /* never a second call with the first one's error pending */
            Py_SETREF(extra[1], PyObject_GetAttr(change, names[BASIS]));
    }
    PyObject *const keys[] = {names[RELATIVE_CHANGE], names[RELATIVE_BASIS]};
    enum Outcome outcome = extra[0] == NULL || extra[1] == NULL
                               ? FAILED
                               : form_record(form, diff, extra, keys, 2, record);
    Py_XDECREF(extra[0]);
    Py_XDECREF(extra[1]);
    return outcome;
}

/* The parts of a record in their keys' order: name, status, role, baseline, candidate, diff. */
#define PARTS 6

/* A tensor's record from its parts (new references, stolen). */
static PyObject *record_from(PyObject **parts) {
    PyObject *record = _PyDict_NewPresized(PARTS);
    for (int i = 0; i < PARTS; i++) {
        if (record != NULL && PyDict_SetItem(record, names[i], parts[i]) < 0) Py_CLEAR(record);
        Py_DECREF(parts[i]);
    }
    return record;
}

/* A tensor's attribute, a new reference: from its attribute dict (a lookup there took ~70
 * instructions, PyObject_GetAttr ~235), else as Python reads it (the role, computed once). */
static PyObject *attribute(PyObject *tensor, PyObject *dict, enum Name name) {
    PyObject *value = dict != NULL ? PyDict_GetItemWithError(dict, names[name]) : NULL;
    if (value != NULL) return Py_NewRef(value);
    return PyErr_Occurred() ? NULL : PyObject_GetAttr(tensor, names[name]);
}

/* A tensor's record, or LEFT for one with a rename (its record goes through Python). */
static enum Outcome tensor_record(const Layout *layout, PyObject *tensor, PyObject *dict,
                                  PyObject *name, PyObject *change, PyObject **record) {
    PyObject *rename = attribute(tensor, dict, RENAME);
    if (rename == NULL) return FAILED;
    Py_DECREF(rename);
    if (rename != Py_None) return LEFT;
    PyObject *parts[PARTS] = {Py_NewRef(name)};
    enum Outcome outcome = BUILT;
    for (int i = STATUS; outcome == BUILT && i < PARTS; i++) {
        PyObject *part = attribute(tensor, dict, (enum Name)i);
        if (part == NULL)
            outcome = FAILED;
        else if (i == DIFF)
            outcome = diff_record(&layout->diff, part, change, &parts[i]);
        else if (i == BASELINE || i == CANDIDATE)
            outcome = form_record(&layout->side, part, NULL, NULL, 0, &parts[i]);
        else
            parts[i] = Py_NewRef(part);
        Py_XDECREF(part);
    }
    if (outcome != BUILT) {
        for (int i = 0; i < PARTS; i++) Py_XDECREF(parts[i]);
        return outcome;
    }
    *record = record_from(parts);
    return *record == NULL ? FAILED : BUILT;
}

/* The tensor's attribute dict (a new reference), or NULL, no error set, for one without. */
static PyObject *dict_of(PyObject *tensor) {
    PyObject *dict = PyObject_GenericGetDict(tensor, NULL);
    if (dict == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) PyErr_Clear();
    return dict;
}

/* The record of one tensor, built here or by the fallback; NULL with an error set. */
static PyObject *record_of(const Layout *layout, PyObject *tensor, PyObject *changes) {
    PyObject *dict = dict_of(tensor);
    PyObject *name = PyErr_Occurred() ? NULL : attribute(tensor, dict, NAME);
    PyObject *change = name != NULL ? change_of(changes, name) : NULL;
    PyObject *record = NULL;
    enum Outcome outcome =
        change != NULL ? tensor_record(layout, tensor, dict, name, change, &record) : FAILED;
    if (outcome == LEFT)
        record = PyObject_CallFunctionObjArgs(layout->fallback, tensor, change, NULL);
    Py_XDECREF(dict);
    Py_XDECREF(name);
    Py_XDECREF(change);
    return record;
}

/* A form from (names, kinds): a tuple of str and a tuple of ints, one for each. */
static int form_from(PyObject *given, Form *form) {
    PyObject *kinds;
    if (!PyArg_ParseTuple(given, "O!O!", &PyTuple_Type, &form->names, &PyTuple_Type, &kinds))
        return 0;
    form->count = PyTuple_GET_SIZE(form->names);
    if (form->count > MOST_FIELDS || PyTuple_GET_SIZE(kinds) != form->count) {
        PyErr_SetString(PyExc_ValueError, "a form has at most 32 fields and one kind for each");
        return 0;
    }
    for (Py_ssize_t i = 0; i < form->count; i++) {
        long kind = PyLong_AsLong(PyTuple_GET_ITEM(kinds, i));
        if (kind < AS_IS || kind > DROPPED || !PyUnicode_Check(PyTuple_GET_ITEM(form->names, i))) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "a field is a str, a kind 0-3");
            return 0;
        }
        form->kinds[i] = (enum Kind)kind;
    }
    return 1;
}

const char tensor_records_doc[] =
    "tensor_records(tensors, changes, side, diff, fallback) -> list of dicts\n\n"
    "Each tensor's report record (diffai/report.py's tensor_record), its relative change\n"
    "changes.get(name). side and diff are (names, kinds): the stats' and the diff's fields\n"
    "in order and what the record does with each (0 keeps it, 1 keeps a float field, 2\n"
    "makes it a list, 3 leaves out a None). Any other tensor's record is\n"
    "fallback(tensor, change).";

static PyObject *tensor_records(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *tensors, *changes, *side, *diff;
    Layout layout;
    if (!PyArg_ParseTuple(args, "O!OO!O!O", &PyList_Type, &tensors, &changes, &PyTuple_Type, &side,
                          &PyTuple_Type, &diff, &layout.fallback) ||
        !form_from(side, &layout.side) || !form_from(diff, &layout.diff))
        return NULL;
    PyObject *records = PyList_New(0);
    /* The list is read again each time: the fallback, Python, may change it. */
    for (Py_ssize_t i = 0; records != NULL && i < PyList_GET_SIZE(tensors); i++) {
        PyObject *tensor = Py_NewRef(PyList_GET_ITEM(tensors, i));
        PyObject *record = record_of(&layout, tensor, changes);
        Py_DECREF(tensor);
        if (record == NULL || PyList_Append(records, record) < 0) Py_CLEAR(records);
        Py_XDECREF(record);
    }
    return records;
}

static PyMethodDef methods[] = {
    {"tensor_records", tensor_records, METH_VARARGS, tensor_records_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef records_module = {
    PyModuleDef_HEAD_INIT, "diffai._records",
    "The report's per-tensor records, built in C (see _records.c).", -1, methods, NULL, NULL,
    NULL, NULL,
};

PyMODINIT_FUNC PyInit__records(void) {
    for (int i = 0; i < NAMES; i++) {
        if (names[i] == NULL && (names[i] = PyUnicode_InternFromString(NAME_TEXT[i])) == NULL)
            return NULL;
    }
    return PyModule_Create(&records_module);
}
