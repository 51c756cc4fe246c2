/*
 * diffai._kernel.measure_pairs: a batch of small pairs, from tensor references to comparisons.
 *
 * Each (name, baseline ref, candidate ref) of the batch becomes the TensorComparison that
 * diffai/comparison.py would build for it (TensorStats of each side, their DiffStats, the
 * status and role hint), or None for a pair to measure alone there: a side missing, shapes
 * that differ, a dtype the kernel does not read as stored, more than one chunk.
 *
 * Why in C: on 100,000 pairs of 8 x 8 the Python around the kernel cost ~18 us a pair
 * (each ref read, a numpy view per side, three frozen dataclasses, the status), the kernel
 * 2.6. Here each ref is read once, a safetensors tensor straight from its file's mapping (its
 * load is partial(mapped_view, data, begin, end, layout): no view built), its fields from its
 * own dict where getattr would find them there, and the objects are built past their
 * generated __init__ (build_frozen, diffai/_instances.c), their attributes the same. Those
 * two took a batch call from 21,700 to 10,550 instructions a pair of 8 x 8 (callgrind), from
 * 6.5-7.8 to 3.4-4.4 us (CPU time, load 4, interleaved).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_kernel.h"

/* What configure() was given, once, by diffai/comparison.py. */
static struct {
    PyObject *stats_kind, *stats_fields, *diff_kind, *diff_fields, *comparison_kind,
        *comparison_fields;
    PyObject *statuses;     /* ("unchanged", "changed", "dtype_changed") */
    PyObject *mapped_view;  /* a load partial(mapped_view, data, begin, end, layout) is read in place */
    PyObject *codes;        /* dtype name -> element code, for the dtypes read as stored */
    PyObject *chunk_of;     /* ref -> (buffer, code) or None, for any other load */
    PyObject *partial_kind; /* functools.partial */
    PyObject *members[3];   /* its func, args and keywords descriptors */
    Py_ssize_t chunk_elements;
} config;

/* The attribute names read, interned once. */
enum Name {
    LOAD, DTYPE, SHAPE, ELEMENTS, NBYTES, STORED_AS, STORED_SIZE, SPARSE, LAYOUT, NNZ,
    QUANTIZATION, ROLE_HINT, FUNC, ARGS, KEYWORDS, NAMES
};
static const char *const NAME_TEXT[NAMES] = {
    "load", "dtype", "shape", "elements", "nbytes", "stored_as", "stored_size", "sparse",
    "layout", "nnz", "quantization", "role_hint", "func", "args", "keywords",
};
static PyObject *names[NAMES];

/* A reference as the batch reads it (borrowed: the pair holds it). Its fields are read by
 * getattr: a reference's own dict was read directly for a while, but the readers build
 * their references with inline values (no dict), so that path served only tests. */
typedef struct {
    PyObject *object;
} Ref;

/* A side as the kernel reads it; shape and dtype are new references. */
typedef struct {
    PyObject *shape, *dtype;
    const unsigned char *data;
    int code;
} SideRead;

/* One pair of the batch: taken (n >= 0) or left to measure alone. */
typedef struct {
    PyObject *pair; /* (name, base, cand), a new reference */
    Ref refs[2];
    SideRead sides[2];
    Py_ssize_t n;
    SideFigures figures[2];
    DiffFigures diff;
} Item;

/* The batch: its items and the buffers it holds (a mapped file's once per side). */
typedef struct {
    Item *items;
    Py_ssize_t count;
    Py_buffer *held;
    Py_ssize_t held_count, held_room;
    PyObject *mapped[2]; /* each side's last mapped file, held at mapped_at[side] */
    Py_ssize_t mapped_at[2];
} Batch;

const char configure_doc[] =
    "configure(stats_kind, stats_fields, diff_kind, diff_fields, comparison_kind,\n"
    "          comparison_fields, statuses, mapped_view, codes, chunk_of, chunk_elements)\n\n"
    "The classes measure_pairs builds and their field names, the statuses it gives\n"
    "(unchanged, changed, dtype_changed), the load function it reads in place, the element\n"
    "code of each dtype name it reads, the function giving any other side's (buffer, code)\n"
    "or None, and the most elements a side may have.";

static void keep(PyObject **slot, PyObject *value) {
    Py_XSETREF(*slot, Py_NewRef(value));
}

PyObject *configure(PyObject *module, PyObject *args) {
    PyObject *stats_kind, *stats_fields, *diff_kind, *diff_fields, *comparison_kind,
        *comparison_fields, *statuses, *mapped_view, *codes, *chunk_of;
    Py_ssize_t chunk_elements;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O!O!OO!On", &PyType_Type, &stats_kind, &PyTuple_Type,
                          &stats_fields, &PyType_Type, &diff_kind, &PyTuple_Type, &diff_fields,
                          &PyType_Type, &comparison_kind, &PyTuple_Type, &comparison_fields,
                          &PyTuple_Type, &statuses, &mapped_view, &PyDict_Type, &codes, &chunk_of,
                          &chunk_elements))
        return NULL;
    if (PyTuple_GET_SIZE(stats_fields) != 15 || PyTuple_GET_SIZE(diff_fields) != 9 ||
        PyTuple_GET_SIZE(comparison_fields) != 8 || PyTuple_GET_SIZE(statuses) != 3) {
        PyErr_SetString(PyExc_TypeError, "configure: 15 stats, 9 diff, 8 comparison fields and "
                                         "3 statuses");
        return NULL;
    }
    for (int i = 0; i < NAMES; i++) {
        if (names[i] == NULL && (names[i] = PyUnicode_InternFromString(NAME_TEXT[i])) == NULL)
            return NULL;
    }
    PyObject *functools = PyImport_ImportModule("functools");
    PyObject *partial = functools ? PyObject_GetAttrString(functools, "partial") : NULL;
    Py_XDECREF(functools);
    if (partial == NULL) return NULL;
    keep(&config.partial_kind, partial);
    Py_DECREF(partial);
    for (int i = 0; i < 3; i++) {
        PyObject *member = _PyType_Lookup((PyTypeObject *)config.partial_kind, names[FUNC + i]);
        if (member == NULL || Py_TYPE(member)->tp_descr_get == NULL ||
            Py_TYPE(member)->tp_descr_set == NULL) {
            PyErr_SetString(PyExc_TypeError, "functools.partial's func, args and keywords are "
                                             "not its fields");
            return NULL;
        }
        keep(&config.members[i], member);
    }
    keep(&config.stats_kind, stats_kind);
    keep(&config.stats_fields, stats_fields);
    keep(&config.diff_kind, diff_kind);
    keep(&config.diff_fields, diff_fields);
    keep(&config.comparison_kind, comparison_kind);
    keep(&config.comparison_fields, comparison_fields);
    keep(&config.statuses, statuses);
    keep(&config.mapped_view, mapped_view);
    keep(&config.codes, codes);
    keep(&config.chunk_of, chunk_of);
    config.chunk_elements = chunk_elements;
    Py_RETURN_NONE;
}

/* The buffer of `exporter`, held until the batch ends; NULL with an exception set. */
static const Py_buffer *hold(Batch *batch, PyObject *exporter) {
    if (batch->held_count == batch->held_room) {
        Py_ssize_t room = batch->held_room ? 2 * batch->held_room : 8;
        Py_buffer *grown = PyMem_Realloc(batch->held, (size_t)room * sizeof *grown);
        if (grown == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        batch->held = grown;
        batch->held_room = room;
    }
    Py_buffer *view = &batch->held[batch->held_count];
    if (PyObject_GetBuffer(exporter, view, PyBUF_SIMPLE) < 0) return NULL;
    batch->held_count++;
    return view; /* PyBUF_SIMPLE: contiguous */
}

/* The side's bytes from `buffer` at `begin`, which must hold n elements of its code there. */
static int place(SideRead *side, const Py_buffer *buffer, Py_ssize_t begin, Py_ssize_t end,
                 Py_ssize_t n) {
    if (begin < 0 || end < begin || end > buffer->len || end - begin != n * WIDTH[side->code]) {
        PyErr_Format(PyExc_ValueError, "a side's %zd bytes are not its %zd elements",
                     end - begin, n);
        return -1;
    }
    side->data = (const unsigned char *)buffer->buf + begin;
    return 1;
}

/* The mapped file's buffer for a side, held once per file and side. */
static const Py_buffer *mapped_buffer(Batch *batch, int which, PyObject *data) {
    if (batch->mapped[which] == data) return &batch->held[batch->mapped_at[which]];
    const Py_buffer *view = hold(batch, data);
    if (view != NULL) {
        batch->mapped[which] = data; /* alive while held */
        batch->mapped_at[which] = batch->held_count - 1;
    }
    return view;
}

/* A field of a functools.partial, through its descriptor: what getattr finds first, without
 * the walk there (0.2 us a pair for the three fields of both sides). */
static PyObject *member_of(PyObject *load, enum Name name) {
    PyObject *member = config.members[name - FUNC];
    return Py_TYPE(member)->tp_descr_get(member, load, (PyObject *)Py_TYPE(load));
}

/* A load partial(mapped_view, data, begin, end, layout) of the side's dtype: its bytes read in
 * place. 1 when it is one, 0 when not, -1 with an exception set. */
static int read_span(Batch *batch, int which, PyObject *load, SideRead *side, Py_ssize_t n) {
    if (Py_TYPE(load) != (PyTypeObject *)config.partial_kind) return 0;
    PyObject *func = member_of(load, FUNC);
    PyObject *keywords = func ? member_of(load, KEYWORDS) : NULL;
    PyObject *args = keywords ? member_of(load, ARGS) : NULL;
    int span = func == config.mapped_view && keywords && PyDict_Check(keywords) &&
               PyDict_GET_SIZE(keywords) == 0 && args && PyTuple_Check(args) &&
               PyTuple_GET_SIZE(args) == 4;
    PyObject *layout = span ? PyTuple_GET_ITEM(args, 3) : NULL;
    span = span && PyTuple_Check(layout) && PyTuple_GET_SIZE(layout) > 0 &&
           PyObject_RichCompareBool(PyTuple_GET_ITEM(layout, 0), side->dtype, Py_EQ) == 1;
    int result = PyErr_Occurred() ? -1 : 0;
    if (span && result == 0) {
        Py_ssize_t begin = PyLong_AsSsize_t(PyTuple_GET_ITEM(args, 1));
        Py_ssize_t end = PyLong_AsSsize_t(PyTuple_GET_ITEM(args, 2));
        const Py_buffer *view = PyErr_Occurred() ? NULL
                                                 : mapped_buffer(batch, which, PyTuple_GET_ITEM(args, 0));
        result = view == NULL ? -1 : place(side, view, begin, end, n);
    }
    Py_XDECREF(func);
    Py_XDECREF(keywords);
    Py_XDECREF(args);
    return result;
}

/* Any other load: chunk_of(ref) gives (buffer, code) or None. 1, 0 or -1 as read_span. */
static int read_chunk(Batch *batch, PyObject *ref, SideRead *side, Py_ssize_t n) {
    PyObject *chunk = PyObject_CallOneArg(config.chunk_of, ref);
    if (chunk == NULL) return -1;
    int result = 0;
    if (chunk != Py_None) {
        if (!PyTuple_Check(chunk) || PyTuple_GET_SIZE(chunk) != 2) {
            PyErr_SetString(PyExc_TypeError, "chunk_of gives (buffer, code) or None");
            result = -1;
        } else {
            long code = PyLong_AsLong(PyTuple_GET_ITEM(chunk, 1));
            const Py_buffer *view = PyErr_Occurred() ? NULL : hold(batch, PyTuple_GET_ITEM(chunk, 0));
            if (view != NULL && (code < 0 || code >= CODES)) {
                PyErr_Format(PyExc_ValueError, "unknown element code %ld", code);
                view = NULL;
            }
            if (view != NULL) side->code = (int)code;
            result = view == NULL ? -1 : place(side, view, 0, view->len, n);
        }
    }
    Py_DECREF(chunk);
    return result;
}

/* A reference's field, as getattr gives it. A new reference, or NULL. */
static PyObject *field_of(const Ref *ref, enum Name name) {
    return PyObject_GetAttr(ref->object, names[name]);
}

/* The element code of a side's dtype name: 1 when the kernel reads it as stored, 0, or -1. */
static int dtype_code(SideRead *side) {
    PyObject *code = PyDict_GetItemWithError(config.codes, side->dtype);
    if (code == NULL) return PyErr_Occurred() ? -1 : 0;
    side->code = (int)PyLong_AsLong(code);
    return PyErr_Occurred() ? -1 : 1;
}

/* The pair's shapes, dtypes and element count: 1 when the kernel takes it, 0, or -1. */
static int describe(Item *item, const Ref *refs) {
    for (int which = 0; which < 2; which++) {
        SideRead *side = &item->sides[which];
        side->shape = field_of(&refs[which], SHAPE);
        side->dtype = side->shape ? field_of(&refs[which], DTYPE) : NULL;
        if (side->dtype == NULL) return -1;
    }
    int same = PyObject_RichCompareBool(item->sides[0].shape, item->sides[1].shape, Py_EQ);
    if (same != 1) return same;
    for (int which = 0; which < 2; which++) {
        int known = dtype_code(&item->sides[which]);
        if (known != 1) return known;
    }
    PyObject *elements = field_of(&refs[0], ELEMENTS);
    item->n = elements ? PyLong_AsSsize_t(elements) : -1;
    Py_XDECREF(elements);
    if (PyErr_Occurred()) return -1;
    return item->n <= config.chunk_elements;
}

/* Both sides' loads read where the kernel can take them: 1, 0, or -1. */
static int read_sides(Batch *batch, Item *item, const Ref *refs) {
    PyObject *loads[2];
    loads[0] = field_of(&refs[0], LOAD);
    loads[1] = loads[0] ? field_of(&refs[1], LOAD) : NULL;
    int result = loads[1] == NULL ? -1 : loads[0] != Py_None && loads[1] != Py_None;
    for (int which = 0; result == 1 && which < 2; which++) {
        result = read_span(batch, which, loads[which], &item->sides[which], item->n);
        if (result == 0) result = read_chunk(batch, refs[which].object, &item->sides[which], item->n);
    }
    Py_XDECREF(loads[0]);
    Py_XDECREF(loads[1]);
    return result;
}

/* One pair of the batch looked at: 0 (taken or not: item->n), -1 with an exception set. */
static int take(Batch *batch, Item *item, PyObject *pair) {
    item->n = -1;
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 3) {
        PyErr_SetString(PyExc_TypeError, "a pair is (name, baseline ref, candidate ref)");
        return -1;
    }
    item->pair = Py_NewRef(pair);
    PyObject *const *refs = &PyTuple_GET_ITEM(pair, 1);
    if (refs[0] == Py_None || refs[1] == Py_None) return 0;
    item->refs[0].object = refs[0];
    item->refs[1].object = refs[1];
    int taken = describe(item, item->refs);
    if (taken == 1) taken = read_sides(batch, item, item->refs);
    if (taken != 1) item->n = -1;
    return taken < 0 ? -1 : 0;
}

/* A taken pair measured and finished, without the GIL. */
static void measure_item(Item *item, double epsilon) {
    const SideRead *base = &item->sides[0], *cand = &item->sides[1];
    PairSums sums;
    pair_sums(base->data, base->code, cand->data, cand->code, item->n, epsilon, &sums);
    side_figures(&sums.base, base->data, base->code, item->n, &item->figures[0]);
    side_figures(&sums.cand, cand->data, cand->code, item->n, &item->figures[1]);
    diff_figures(&sums.diff, item->n, &item->diff);
}

static void release(Batch *batch) {
    for (Py_ssize_t i = 0; i < batch->count; i++) {
        Item *item = &batch->items[i];
        Py_XDECREF(item->pair);
        for (int which = 0; which < 2; which++) {
            Py_XDECREF(item->sides[which].shape);
            Py_XDECREF(item->sides[which].dtype);
        }
    }
    for (Py_ssize_t i = 0; i < batch->held_count; i++) PyBuffer_Release(&batch->held[i]);
    PyMem_Free(batch->held);
    PyMem_Free(batch->items);
}

/* A double, or None when absent. */
static PyObject *maybe(int present, double value) {
    return present ? PyFloat_FromDouble(value) : Py_NewRef(Py_None);
}

/* `kind` built from `count` new references (stolen), NULL among them failing it. */
static PyObject *built(PyObject *kind, PyObject *fields, PyObject **values, Py_ssize_t count) {
    int complete = 1;
    for (Py_ssize_t i = 0; i < count; i++) complete = complete && values[i] != NULL;
    PyObject *object = complete ? build_frozen((PyTypeObject *)kind, fields, values) : NULL;
    for (Py_ssize_t i = 0; i < count; i++) Py_XDECREF(values[i]);
    return object;
}

/* An attribute of `owner`, or None when `owner` is None. */
static PyObject *attribute_of(PyObject *owner, enum Name name) {
    return owner == Py_None ? Py_NewRef(Py_None) : PyObject_GetAttr(owner, names[name]);
}

/* TensorRef.stored_dtype and stored_bytes from the fields they read: the properties, Python
 * calls, took 0.1 and 0.25 us a side (timeit), these 0.03 each (tests/test_batch.py holds the
 * two ways equal). Both new references into values[2] and values[4], or NULL. */
static void stored_encoding(const Ref *ref, PyObject *dtype, PyObject **values) {
    PyObject *stored_as = field_of(ref, STORED_AS);
    int given = stored_as ? PyObject_IsTrue(stored_as) : -1;
    values[2] = given < 0 ? NULL : given ? Py_NewRef(stored_as) : Py_NewRef(dtype);
    Py_XDECREF(stored_as);
    PyObject *size = given < 0 ? NULL : field_of(ref, STORED_SIZE);
    values[4] = size == Py_None ? field_of(ref, NBYTES) : Py_XNewRef(size);
    Py_XDECREF(size);
}

/* A side's TensorStats (diffai/stats.py's _tensor_stats); its stored dtype kept for the status. */
static PyObject *stats_object(const Ref *ref, const SideRead *side, Py_ssize_t elements,
                              const SideFigures *figures, PyObject **stored_dtype) {
    PyObject *sparse = field_of(ref, SPARSE);
    if (sparse == NULL) return NULL; /* no further call with an exception set */
    int has = figures->has_values;
    PyObject *values[] = {
        Py_NewRef(side->shape), Py_NewRef(side->dtype), NULL,
        PyLong_FromSsize_t(elements), NULL,
        maybe(has, figures->mean), maybe(has, figures->std), maybe(has, figures->min),
        maybe(has, figures->max), PyLong_FromLongLong(figures->nan),
        PyLong_FromLongLong(figures->inf), PyLong_FromLongLong(figures->zeros),
        sparse ? attribute_of(sparse, LAYOUT) : NULL, sparse ? attribute_of(sparse, NNZ) : NULL,
        field_of(ref, QUANTIZATION),
    };
    Py_DECREF(sparse);
    if (!PyErr_Occurred()) stored_encoding(ref, side->dtype, values);
    *stored_dtype = Py_XNewRef(values[2]);
    return built(config.stats_kind, config.stats_fields, values, sizeof values / sizeof *values);
}

static PyObject *diff_object(const DiffFigures *diff) {
    int compared = diff->compared;
    PyObject *values[] = {
        maybe(compared, diff->max_abs), maybe(compared, diff->mean_abs),
        maybe(compared, diff->l2), maybe(diff->relative, diff->relative_l2),
        maybe(diff->cosine, diff->cos), PyLong_FromLongLong(diff->changed),
        PyFloat_FromDouble(diff->changed_fraction), maybe(compared, diff->baseline_l2),
        maybe(compared, diff->candidate_l2),
    };
    return built(config.diff_kind, config.diff_fields, values, sizeof values / sizeof *values);
}

/* comparison.py's _status: dtype_changed when either dtype differs, else changed or not. */
static PyObject *status_of(const Item *item, PyObject *const *stored, const DiffFigures *diff) {
    int dtypes = PyObject_RichCompareBool(stored[0], stored[1], Py_NE);
    if (dtypes == 0) dtypes = PyObject_RichCompareBool(item->sides[0].dtype, item->sides[1].dtype, Py_NE);
    if (dtypes < 0) return NULL;
    Py_ssize_t index = dtypes ? 2 : diff->changed != 0;
    return Py_NewRef(PyTuple_GET_ITEM(config.statuses, index));
}

/* comparison.py's _role_hint for a pair: the sides' hint when they agree, else None. */
static PyObject *role_hint_of(const Ref *refs) {
    PyObject *base = field_of(&refs[0], ROLE_HINT);
    PyObject *cand = base ? field_of(&refs[1], ROLE_HINT) : NULL;
    int same = cand ? PyObject_RichCompareBool(base, cand, Py_EQ) : -1;
    Py_XDECREF(cand);
    if (same == 1) return base;
    Py_XDECREF(base);
    return same == 0 ? Py_NewRef(Py_None) : NULL;
}

/* A taken pair's TensorComparison. */
static PyObject *comparison_object(const Item *item) {
    const Ref *refs = item->refs;
    PyObject *stored[2] = {NULL, NULL};
    PyObject *base = stats_object(&refs[0], &item->sides[0], item->n, &item->figures[0], &stored[0]);
    PyObject *cand = base ? stats_object(&refs[1], &item->sides[1], item->n, &item->figures[1],
                                         &stored[1])
                          : NULL;
    PyObject *status = cand && stored[0] && stored[1] ? status_of(item, stored, &item->diff) : NULL;
    Py_XDECREF(stored[0]);
    Py_XDECREF(stored[1]);
    if (status == NULL) { /* stop at the first failure: no call with an exception set */
        Py_XDECREF(base);
        Py_XDECREF(cand);
        return NULL;
    }
    PyObject *values[] = {
        Py_NewRef(PyTuple_GET_ITEM(item->pair, 0)), status, base, cand, diff_object(&item->diff),
        role_hint_of(refs), Py_NewRef(Py_None), Py_NewRef(Py_None),
    };
    return built(config.comparison_kind, config.comparison_fields, values,
                 sizeof values / sizeof *values);
}

static PyObject *batch_results(const Batch *batch) {
    PyObject *results = PyList_New(batch->count);
    for (Py_ssize_t i = 0; results != NULL && i < batch->count; i++) {
        const Item *item = &batch->items[i];
        PyObject *result = item->n < 0 ? Py_NewRef(Py_None) : comparison_object(item);
        if (result == NULL) Py_CLEAR(results);
        else PyList_SET_ITEM(results, i, result);
    }
    return results;
}

const char measure_pairs_doc[] =
    "measure_pairs(pairs, epsilon) -> list\n\n"
    "Every (name, baseline ref, candidate ref) of a list as its TensorComparison, or None for\n"
    "a pair to measure alone (see configure); one call and one release of the GIL a batch.";

PyObject *measure_pairs(PyObject *module, PyObject *args) {
    PyObject *pairs, *results = NULL;
    double epsilon;
    if (!PyArg_ParseTuple(args, "O!d", &PyList_Type, &pairs, &epsilon)) return NULL;
    if (config.chunk_of == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "measure_pairs before configure");
        return NULL;
    }
    Batch batch = {.count = PyList_GET_SIZE(pairs)};
    batch.items = PyMem_Calloc(batch.count ? batch.count : 1, sizeof *batch.items);
    if (batch.items == NULL) return PyErr_NoMemory();
    int failed = 0;
    for (Py_ssize_t i = 0; !failed && i < batch.count; i++)
        failed = take(&batch, &batch.items[i], PyList_GET_ITEM(pairs, i)) < 0;
    if (!failed) {
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < batch.count; i++)
            if (batch.items[i].n >= 0) measure_item(&batch.items[i], epsilon);
        Py_END_ALLOW_THREADS
        results = batch_results(&batch);
    }
    release(&batch);
    return results;
}
