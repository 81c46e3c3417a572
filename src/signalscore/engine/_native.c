/*
 * signalscore.engine._native: the batch scoring loop of SPEC §6 in C.
 *
 * This is the same loop as the generated Python scorer in _codegen.py, step for step, and it
 * builds exactly the same Python objects (DimensionResult tuples holding contribution dicts).
 * Everything that decides a result (rule parsing, maxPoints, range tables, contribution
 * templates, range labels) is computed once in Python by _rules.py and handed over as a
 * "plan" (see _native_plan.py); this file only runs the per-object work. The property tests
 * run both scorers against the reference implementation.
 *
 * Plan layout (tuples only; the Scorer keeps a reference to it, so the borrowed pointers
 * below stay valid for the Scorer's lifetime):
 *
 *   (helpers, slots, dims)
 *   helpers = (DimensionResult, fsum, round, as_number, as_list, additive_float_points,
 *              decay_points, ndays, score_memo_size, max_matched_value_chars, ellipsis)
 *             every matchedValue longer than max_matched_value_chars code points is cut to
 *             its first (max - len(ellipsis)) code points + ellipsis (bound_matched_value)
 *   slots   = ((template_id, kind), ...)        kind: 0 raw (boolean), 1 number, 2 list
 *   dims    = ((name, max_possible, int_exact, score_memo, total_rules, rules), ...)
 *   rules   = (0, slot, absent, on_true, on_false, if_true, if_false, steps)          boolean
 *           | (1, slot, absent, boundaries, entries, steps)                            range
 *               entries = ((points, " (label)", template), ...), last one = no range
 *           | (2, slot, absent, mode, template, points_by_key, keys, total, steps)    list
 *               mode: 0 additive (int points), 1 additive (float points), 2 best-match,
 *                     3 contains-all, 4 contains-none, 5 exact-match
 *   steps   = the rule's decay steps (SPEC §13) in increasing afterDays order, () if none:
 *             ((th, after_days, factor, on_true, on_false, if_true, if_false), ...)  boolean
 *           | ((th, after_days, factor, ((points, template), ...)), ...)   range, per entry
 *           | ((th, after_days, factor, template, memo), ...)             list
 *               memo: dict, pointsEarned -> decayed pointsEarned (a float factor only)
 *             th: index of the step's threshold among the ``ndays`` per-call thresholds.
 *
 * Time decay: score_batch(values_list, normalized, observed_list, thresholds) also reads each
 * value's observedAt (canonical UTC text, 27 ASCII characters) from the mappings of
 * observed_list. thresholds[th] is the text of ``now - afterDays days`` ("" when before year
 * 1): a step has passed when observedAt < its threshold, compared with memcmp (fixed-width
 * text: string order is time order). Steps pass as a prefix, so the rule's factor is that of
 * the last passed one, and the first one not passed gives the dimension's next change.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

enum { SLOT_RAW = 0, SLOT_NUMBER = 1, SLOT_LIST = 2 };
enum { RULE_BOOLEAN = 0, RULE_RANGE = 1, RULE_LIST = 2 };
enum {
    MODE_ADDITIVE_INT = 0,
    MODE_ADDITIVE_FLOAT = 1,
    MODE_BEST_MATCH = 2,
    MODE_CONTAINS_ALL = 3,
    MODE_CONTAINS_NONE = 4,
    MODE_EXACT_MATCH = 5,
};

/* Integers up to this magnitude convert to double exactly. */
#define EXACT_INT_LIMIT 9007199254740992LL
/* Integral floats below this magnitude print as integers ("874", not "874.0"). */
#define INTEGRAL_FLOAT_LIMIT 1e16
/* Canonical UTC text: YYYY-MM-DDTHH:MM:SS.ffffffZ. */
#define OBSERVED_CHARS 27
/* Days from 0001-01-01 to 9999-12-31: no date shifted by more stays below year 10000. */
#define MAX_SHIFT_DAYS 3652058LL

typedef struct {
    Py_ssize_t th;   /* index of its threshold in the per-call thresholds */
    long long days;  /* afterDays (LLONG_MAX when it does not fit) */
    PyObject *factor;
    int factor_one; /* factor == 1: points are left as they are */
    /* boolean */
    PyObject *on_true, *on_false, *if_true, *if_false;
    /* range: per entry, as Rule.entry_points / entry_template */
    PyObject **entry_points, **entry_template;
    /* list */
    PyObject *template;
    PyObject *memo; /* dict: points -> decay_points(points, factor), bounded by memo_size */
} Step;

/* The earliest next change of one dimension of one object. */
typedef struct {
    int set;
    char text[OBSERVED_CHARS];
} NextChange;

typedef struct {
    PyObject *key; /* borrowed from the plan */
    int kind;
} Slot;

typedef struct {
    int kind;
    Py_ssize_t slot;
    PyObject *absent; /* dict: the contribution of an object without a value */
    /* boolean */
    PyObject *on_true, *on_false, *if_true, *if_false;
    /* range */
    Py_ssize_t nbounds;
    PyObject **bounds;  /* the boundaries as Python numbers (exact comparisons) */
    double *bounds_d;   /* the same as doubles, when every one converts exactly */
    int exact_bounds;
    Py_ssize_t nentries;
    PyObject **entry_points, **entry_suffix, **entry_template;
    /* list */
    int mode;
    PyObject *template, *points_by_key, *keys, *total;
    /* decay */
    Py_ssize_t nsteps;
    Step *steps;
} Rule;

typedef struct {
    PyObject *name;
    PyObject *max_possible; /* float */
    double mp;
    int int_exact;
    PyObject *memo; /* dict: earned -> score */
    PyObject *total_rules; /* int */
    long total;
    Py_ssize_t nrules;
    Rule *rules;
} Dim;

/* One template's value for the object being scored, prepared once for every rule using it. */
typedef struct {
    PyObject *value;  /* new reference, or NULL when absent */
    PyObject *text;   /* number: its matchedValue text; list: the joined values */
    PyObject *answer; /* list: set of normalised values */
    PyObject **unique; /* list: the set's members in insertion order (borrowed from answer) */
    Py_ssize_t nunique, cap;
    double number;
    int exact, nan;
    PyObject *observed; /* new reference: the value's observedAt (checked), or NULL */
} Prepared;

typedef struct {
    PyObject_HEAD
    PyObject *plan;
    PyTypeObject *result_type;
    PyObject *fsum, *round, *as_number, *as_list, *additive_float, *decay_points;
    Py_ssize_t memo_size;
    Py_ssize_t ndays; /* how many thresholds a call with observedAt passes */
    /* matchedValue bound: longer texts keep their first ``keep`` code points + ellipsis */
    Py_ssize_t max_matched, keep;
    PyObject *ellipsis; /* borrowed from the plan */
    Py_ssize_t nslots;
    Slot *slots;
    Py_ssize_t ndims;
    Dim *dims;
} Scorer;

static PyObject *s_matched_value; /* "matchedValue" */
static PyObject *s_points_earned; /* "pointsEarned" */
static PyObject *s_observed_at;   /* "observedAt" */
static PyObject *s_separator;     /* ", " */
static PyObject *s_get;           /* "get" */
static PyObject *s_strip;         /* "strip" */
static PyObject *s_casefold;      /* "casefold" */
static PyObject *int_zero;
static PyObject *int_one;
static PyObject *int_two;

/* ---------------------------------------------------------------------------------------- */
/* plan parsing                                                                             */

static int
expect_tuple(PyObject *obj, Py_ssize_t size, const char *what)
{
    if (!PyTuple_Check(obj) || (size >= 0 && PyTuple_GET_SIZE(obj) != size)) {
        PyErr_Format(PyExc_TypeError, "scorer plan: malformed %s", what);
        return -1;
    }
    return 0;
}

static int
expect_dict(PyObject *obj, const char *what)
{
    if (!PyDict_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "scorer plan: %s must be a dict", what);
        return -1;
    }
    return 0;
}

/* Is ``obj`` an int or float that converts to a double exactly? */
static int
exact_double(PyObject *obj, double *out)
{
    if (PyFloat_CheckExact(obj)) {
        *out = PyFloat_AS_DOUBLE(obj);
        return 1;
    }
    if (PyLong_CheckExact(obj)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        if (overflow || v > EXACT_INT_LIMIT || v < -EXACT_INT_LIMIT) {
            return 0;
        }
        *out = (double)v;
        return 1;
    }
    return 0;
}

static int
parse_steps(Scorer *self, PyObject *steps, Rule *rule)
{
    if (expect_tuple(steps, -1, "decay steps") < 0) {
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(steps);
    if (n == 0) {
        return 0;
    }
    rule->steps = PyMem_Calloc(n, sizeof(Step));
    if (!rule->steps) {
        PyErr_NoMemory();
        return -1;
    }
    rule->nsteps = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *spec = PyTuple_GET_ITEM(steps, i);
        Step *step = &rule->steps[i];
        Py_ssize_t size = rule->kind == RULE_BOOLEAN ? 7 : rule->kind == RULE_RANGE ? 4 : 5;
        if (expect_tuple(spec, size, "decay step") < 0) {
            return -1;
        }
        step->th = PyLong_AsSsize_t(PyTuple_GET_ITEM(spec, 0));
        int overflow = 0;
        step->days = PyLong_AsLongLongAndOverflow(PyTuple_GET_ITEM(spec, 1), &overflow);
        if (PyErr_Occurred()) {
            return -1;
        }
        if (overflow > 0) {
            step->days = LLONG_MAX;
        }
        /* The prefix rule needs strictly increasing afterDays, hence thresholds. */
        if (step->th < 0 || step->th >= self->ndays || overflow < 0 || step->days < 1 ||
            (i > 0 && (step->days <= step[-1].days || step->th <= step[-1].th))) {
            PyErr_SetString(PyExc_ValueError, "scorer plan: malformed decay step");
            return -1;
        }
        step->factor = PyTuple_GET_ITEM(spec, 2);
        step->factor_one = (PyLong_CheckExact(step->factor) || PyFloat_CheckExact(step->factor))
                               ? PyObject_RichCompareBool(step->factor, int_one, Py_EQ)
                               : 0;
        if (step->factor_one < 0) {
            return -1;
        }
        switch (rule->kind) {
        case RULE_BOOLEAN:
            step->on_true = PyTuple_GET_ITEM(spec, 3);
            step->on_false = PyTuple_GET_ITEM(spec, 4);
            step->if_true = PyTuple_GET_ITEM(spec, 5);
            step->if_false = PyTuple_GET_ITEM(spec, 6);
            if (expect_dict(step->if_true, "if_true") < 0 ||
                expect_dict(step->if_false, "if_false") < 0) {
                return -1;
            }
            break;
        case RULE_RANGE: {
            PyObject *entries = PyTuple_GET_ITEM(spec, 3);
            if (expect_tuple(entries, rule->nentries, "decayed range entries") < 0) {
                return -1;
            }
            step->entry_points = PyMem_Calloc(rule->nentries + 1, sizeof(PyObject *));
            step->entry_template = PyMem_Calloc(rule->nentries + 1, sizeof(PyObject *));
            if (!step->entry_points || !step->entry_template) {
                PyErr_NoMemory();
                return -1;
            }
            for (Py_ssize_t e = 0; e < rule->nentries; e++) {
                PyObject *entry = PyTuple_GET_ITEM(entries, e);
                if (expect_tuple(entry, 2, "decayed range entry") < 0) {
                    return -1;
                }
                step->entry_points[e] = PyTuple_GET_ITEM(entry, 0);
                step->entry_template[e] = PyTuple_GET_ITEM(entry, 1);
                if (expect_dict(step->entry_template[e], "decayed range template") < 0) {
                    return -1;
                }
            }
            break;
        }
        default:
            step->template = PyTuple_GET_ITEM(spec, 3);
            step->memo = PyTuple_GET_ITEM(spec, 4);
            if (expect_dict(step->template, "decayed list template") < 0 ||
                expect_dict(step->memo, "decay memo") < 0) {
                return -1;
            }
        }
    }
    return 0;
}

static int
parse_rule(Scorer *self, PyObject *spec, Rule *rule)
{
    if (expect_tuple(spec, -1, "rule") < 0 || PyTuple_GET_SIZE(spec) < 3) {
        PyErr_SetString(PyExc_TypeError, "scorer plan: malformed rule");
        return -1;
    }
    rule->kind = (int)PyLong_AsLong(PyTuple_GET_ITEM(spec, 0));
    rule->slot = PyLong_AsSsize_t(PyTuple_GET_ITEM(spec, 1));
    if (PyErr_Occurred()) {
        return -1;
    }
    if (rule->slot < 0 || rule->slot >= self->nslots) {
        PyErr_SetString(PyExc_ValueError, "scorer plan: rule slot out of range");
        return -1;
    }
    rule->absent = PyTuple_GET_ITEM(spec, 2);
    if (expect_dict(rule->absent, "absent") < 0) {
        return -1;
    }
    int want_slot = rule->kind == RULE_BOOLEAN ? SLOT_RAW
                    : rule->kind == RULE_RANGE ? SLOT_NUMBER
                                               : SLOT_LIST;
    if (self->slots[rule->slot].kind != want_slot) {
        PyErr_SetString(PyExc_ValueError, "scorer plan: rule uses a slot of another kind");
        return -1;
    }
    switch (rule->kind) {
    case RULE_BOOLEAN:
        if (expect_tuple(spec, 8, "boolean rule") < 0) {
            return -1;
        }
        rule->on_true = PyTuple_GET_ITEM(spec, 3);
        rule->on_false = PyTuple_GET_ITEM(spec, 4);
        rule->if_true = PyTuple_GET_ITEM(spec, 5);
        rule->if_false = PyTuple_GET_ITEM(spec, 6);
        if (expect_dict(rule->if_true, "if_true") < 0 ||
            expect_dict(rule->if_false, "if_false") < 0) {
            return -1;
        }
        return parse_steps(self, PyTuple_GET_ITEM(spec, 7), rule);
    case RULE_RANGE: {
        if (expect_tuple(spec, 6, "range rule") < 0) {
            return -1;
        }
        PyObject *bounds = PyTuple_GET_ITEM(spec, 3);
        PyObject *entries = PyTuple_GET_ITEM(spec, 4);
        if (expect_tuple(bounds, -1, "boundaries") < 0 ||
            expect_tuple(entries, PyTuple_GET_SIZE(bounds) + 2, "range entries") < 0) {
            return -1;
        }
        Py_ssize_t nb = PyTuple_GET_SIZE(bounds), ne = PyTuple_GET_SIZE(entries);
        rule->nbounds = nb;
        rule->nentries = ne;
        rule->bounds = &PyTuple_GET_ITEM(bounds, 0);
        rule->bounds_d = PyMem_Calloc(nb + 1, sizeof(double));
        rule->entry_points = PyMem_Calloc(ne, sizeof(PyObject *));
        rule->entry_suffix = PyMem_Calloc(ne, sizeof(PyObject *));
        rule->entry_template = PyMem_Calloc(ne, sizeof(PyObject *));
        if (!rule->bounds_d || !rule->entry_points || !rule->entry_suffix ||
            !rule->entry_template) {
            PyErr_NoMemory();
            return -1;
        }
        rule->exact_bounds = 1;
        for (Py_ssize_t i = 0; i < nb; i++) {
            if (!exact_double(rule->bounds[i], &rule->bounds_d[i])) {
                rule->exact_bounds = 0;
            }
        }
        for (Py_ssize_t i = 0; i < ne; i++) {
            PyObject *entry = PyTuple_GET_ITEM(entries, i);
            if (expect_tuple(entry, 3, "range entry") < 0) {
                return -1;
            }
            rule->entry_points[i] = PyTuple_GET_ITEM(entry, 0);
            rule->entry_suffix[i] = PyTuple_GET_ITEM(entry, 1);
            rule->entry_template[i] = PyTuple_GET_ITEM(entry, 2);
            if (!PyUnicode_Check(rule->entry_suffix[i]) ||
                expect_dict(rule->entry_template[i], "range template") < 0) {
                PyErr_SetString(PyExc_TypeError, "scorer plan: malformed range entry");
                return -1;
            }
        }
        return parse_steps(self, PyTuple_GET_ITEM(spec, 5), rule);
    }
    case RULE_LIST:
        if (expect_tuple(spec, 9, "list rule") < 0) {
            return -1;
        }
        rule->mode = (int)PyLong_AsLong(PyTuple_GET_ITEM(spec, 3));
        if (PyErr_Occurred()) {
            return -1;
        }
        if (rule->mode < MODE_ADDITIVE_INT || rule->mode > MODE_EXACT_MATCH) {
            PyErr_SetString(PyExc_ValueError, "scorer plan: unknown list mode");
            return -1;
        }
        rule->template = PyTuple_GET_ITEM(spec, 4);
        rule->points_by_key = PyTuple_GET_ITEM(spec, 5);
        rule->keys = PyTuple_GET_ITEM(spec, 6);
        rule->total = PyTuple_GET_ITEM(spec, 7);
        if (expect_dict(rule->template, "list template") < 0 ||
            expect_dict(rule->points_by_key, "points_by_key") < 0) {
            return -1;
        }
        if (!PyFrozenSet_CheckExact(rule->keys)) {
            PyErr_SetString(PyExc_TypeError, "scorer plan: keys must be a frozenset");
            return -1;
        }
        return parse_steps(self, PyTuple_GET_ITEM(spec, 8), rule);
    default:
        PyErr_SetString(PyExc_ValueError, "scorer plan: unknown rule kind");
        return -1;
    }
}

static void
free_tables(Scorer *self)
{
    if (self->dims) {
        for (Py_ssize_t d = 0; d < self->ndims; d++) {
            Dim *dim = &self->dims[d];
            if (!dim->rules) {
                continue;
            }
            for (Py_ssize_t r = 0; r < dim->nrules; r++) {
                Rule *rule = &dim->rules[r];
                for (Py_ssize_t i = 0; rule->steps && i < rule->nsteps; i++) {
                    PyMem_Free(rule->steps[i].entry_points);
                    PyMem_Free(rule->steps[i].entry_template);
                }
                PyMem_Free(rule->steps);
                PyMem_Free(dim->rules[r].bounds_d);
                PyMem_Free(dim->rules[r].entry_points);
                PyMem_Free(dim->rules[r].entry_suffix);
                PyMem_Free(dim->rules[r].entry_template);
            }
            PyMem_Free(dim->rules);
        }
        PyMem_Free(self->dims);
        self->dims = NULL;
    }
    PyMem_Free(self->slots);
    self->slots = NULL;
}

static int
Scorer_init(Scorer *self, PyObject *args, PyObject *kwds)
{
    PyObject *plan;
    static char *kwlist[] = {"plan", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!:Scorer", kwlist, &PyTuple_Type, &plan)) {
        return -1;
    }
    if (self->plan) {
        PyErr_SetString(PyExc_RuntimeError, "Scorer is already initialised");
        return -1;
    }
    if (expect_tuple(plan, 3, "plan") < 0) {
        return -1;
    }
    free_tables(self); /* an earlier __init__ may have failed half-way */
    PyObject *helpers = PyTuple_GET_ITEM(plan, 0);
    PyObject *slots = PyTuple_GET_ITEM(plan, 1);
    PyObject *dims = PyTuple_GET_ITEM(plan, 2);
    if (expect_tuple(helpers, 11, "helpers") < 0 || expect_tuple(slots, -1, "slots") < 0 ||
        expect_tuple(dims, -1, "dimensions") < 0) {
        return -1;
    }
    PyObject *result_type = PyTuple_GET_ITEM(helpers, 0);
    if (!PyType_Check(result_type) ||
        !PyType_IsSubtype((PyTypeObject *)result_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "scorer plan: the result type must be a tuple type");
        return -1;
    }
    self->result_type = (PyTypeObject *)result_type;
    self->fsum = PyTuple_GET_ITEM(helpers, 1);
    self->round = PyTuple_GET_ITEM(helpers, 2);
    self->as_number = PyTuple_GET_ITEM(helpers, 3);
    self->as_list = PyTuple_GET_ITEM(helpers, 4);
    self->additive_float = PyTuple_GET_ITEM(helpers, 5);
    self->decay_points = PyTuple_GET_ITEM(helpers, 6);
    self->ndays = PyLong_AsSsize_t(PyTuple_GET_ITEM(helpers, 7));
    if (PyErr_Occurred()) {
        return -1;
    }
    if (self->ndays < 0) {
        PyErr_SetString(PyExc_ValueError, "scorer plan: ndays must not be negative");
        return -1;
    }
    self->memo_size = PyLong_AsSsize_t(PyTuple_GET_ITEM(helpers, 8));
    if (PyErr_Occurred()) {
        return -1;
    }
    self->max_matched = PyLong_AsSsize_t(PyTuple_GET_ITEM(helpers, 9));
    if (PyErr_Occurred()) {
        return -1;
    }
    self->ellipsis = PyTuple_GET_ITEM(helpers, 10);
    if (!PyUnicode_CheckExact(self->ellipsis) ||
        PyUnicode_GET_LENGTH(self->ellipsis) > self->max_matched) {
        PyErr_SetString(PyExc_ValueError,
                        "scorer plan: the ellipsis must be a str no longer than the bound");
        return -1;
    }
    self->keep = self->max_matched - PyUnicode_GET_LENGTH(self->ellipsis);

    self->nslots = PyTuple_GET_SIZE(slots);
    self->slots = PyMem_Calloc(self->nslots + 1, sizeof(Slot));
    if (!self->slots) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < self->nslots; i++) {
        PyObject *slot = PyTuple_GET_ITEM(slots, i);
        if (expect_tuple(slot, 2, "slot") < 0) {
            return -1;
        }
        self->slots[i].key = PyTuple_GET_ITEM(slot, 0);
        self->slots[i].kind = (int)PyLong_AsLong(PyTuple_GET_ITEM(slot, 1));
        if (PyErr_Occurred()) {
            return -1;
        }
    }

    self->ndims = PyTuple_GET_SIZE(dims);
    self->dims = PyMem_Calloc(self->ndims + 1, sizeof(Dim));
    if (!self->dims) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t d = 0; d < self->ndims; d++) {
        PyObject *spec = PyTuple_GET_ITEM(dims, d);
        Dim *dim = &self->dims[d];
        if (expect_tuple(spec, 6, "dimension") < 0) {
            return -1;
        }
        dim->name = PyTuple_GET_ITEM(spec, 0);
        dim->max_possible = PyTuple_GET_ITEM(spec, 1);
        if (!PyFloat_CheckExact(dim->max_possible)) {
            PyErr_SetString(PyExc_TypeError, "scorer plan: max_possible must be a float");
            return -1;
        }
        dim->mp = PyFloat_AS_DOUBLE(dim->max_possible);
        dim->int_exact = PyObject_IsTrue(PyTuple_GET_ITEM(spec, 2));
        dim->memo = PyTuple_GET_ITEM(spec, 3);
        dim->total_rules = PyTuple_GET_ITEM(spec, 4);
        dim->total = PyLong_AsLong(dim->total_rules);
        if (dim->int_exact < 0 || PyErr_Occurred() || expect_dict(dim->memo, "memo") < 0) {
            return -1;
        }
        PyObject *rules = PyTuple_GET_ITEM(spec, 5);
        if (expect_tuple(rules, dim->total, "dimension rules") < 0) {
            return -1;
        }
        dim->nrules = PyTuple_GET_SIZE(rules);
        dim->rules = PyMem_Calloc(dim->nrules + 1, sizeof(Rule));
        if (!dim->rules) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t r = 0; r < dim->nrules; r++) {
            if (parse_rule(self, PyTuple_GET_ITEM(rules, r), &dim->rules[r]) < 0) {
                return -1;
            }
        }
    }
    Py_INCREF(plan);
    self->plan = plan;
    return 0;
}

static int
Scorer_traverse(Scorer *self, visitproc visit, void *arg)
{
    Py_VISIT(self->plan);
    return 0;
}

static int
Scorer_clear(Scorer *self)
{
    Py_CLEAR(self->plan);
    return 0;
}

static void
Scorer_dealloc(Scorer *self)
{
    PyObject_GC_UnTrack(self);
    Scorer_clear(self);
    free_tables(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ---------------------------------------------------------------------------------------- */
/* per-object work                                                                          */

static void
prepared_clear(Prepared *p)
{
    Py_CLEAR(p->value);
    Py_CLEAR(p->text);
    Py_CLEAR(p->answer);
    Py_CLEAR(p->observed);
    p->nunique = 0;
}

/* matchedValue text of a number: ints as str(), integral floats below 1e16 without ".0",
 * other floats as repr(). */
static PyObject *
number_text(PyObject *value)
{
    if (PyLong_CheckExact(value)) {
        return PyObject_Str(value);
    }
    double v = PyFloat_AS_DOUBLE(value);
    if (v == floor(v) && v > -INTEGRAL_FLOAT_LIMIT && v < INTEGRAL_FLOAT_LIMIT) {
        char buffer[32];
        int n = snprintf(buffer, sizeof(buffer), "%lld", (long long)v);
        return PyUnicode_FromStringAndSize(buffer, n);
    }
    return PyObject_Repr(value);
}

/* The matchedValue bound (bound_matched_value): ``text`` itself when it has at most
 * max_matched code points, else its first ``keep`` code points followed by the ellipsis.
 * Steals the reference to ``text`` (which may be NULL: an error passes through). */
static PyObject *
bound_text(Scorer *self, PyObject *text)
{
    if (!text || PyUnicode_GET_LENGTH(text) <= self->max_matched) {
        return text;
    }
    PyObject *head = PyUnicode_Substring(text, 0, self->keep);
    Py_DECREF(text);
    if (!head) {
        return NULL;
    }
    PyObject *cut = PyUnicode_Concat(head, self->ellipsis);
    Py_DECREF(head);
    return cut;
}

static int
prepare_number(Scorer *self, Prepared *p)
{
    PyObject *value = p->value;
    if (!PyLong_CheckExact(value) && !PyFloat_CheckExact(value)) {
        /* Slow path (bools, int/float subclasses, wrong types): as_number decides. */
        PyObject *number = PyObject_CallOneArg(self->as_number, value);
        if (!number) {
            return -1;
        }
        Py_SETREF(p->value, number);
        if (number == Py_None) {
            Py_CLEAR(p->value);
            return 0;
        }
        if (!PyLong_CheckExact(number) && !PyFloat_CheckExact(number)) {
            PyErr_SetString(PyExc_TypeError, "as_number must return an int, a float or None");
            return -1;
        }
        value = number;
    }
    p->nan = PyFloat_CheckExact(value) && isnan(PyFloat_AS_DOUBLE(value));
    p->exact = exact_double(value, &p->number);
    p->text = number_text(value);
    return p->text ? 0 : -1;
}

static int
remember_unique(Prepared *p, PyObject *item)
{
    if (p->nunique == p->cap) {
        Py_ssize_t cap = p->cap ? p->cap * 2 : 8;
        PyObject **grown = PyMem_Realloc(p->unique, cap * sizeof(PyObject *));
        if (!grown) {
            PyErr_NoMemory();
            return -1;
        }
        p->unique = grown;
        p->cap = cap;
    }
    p->unique[p->nunique++] = item;
    return 0;
}

/* A memo miss: normalise a str here as ``normalize_choice`` does (strip, then casefold) and
 * remember it; anything else goes through the memo's own ``__missing__``. (The memo is always
 * a NormalizedStrings, whose __missing__ does the same for str.) */
static PyObject *
normalize(PyObject *normalized, PyObject *item)
{
    if (!PyUnicode_CheckExact(item)) {
        return PyObject_GetItem(normalized, item);
    }
    PyObject *stripped = PyObject_CallMethodNoArgs(item, s_strip);
    if (!stripped) {
        return NULL;
    }
    PyObject *norm = PyObject_CallMethodNoArgs(stripped, s_casefold);
    Py_DECREF(stripped);
    if (norm && PyDict_SetItem(normalized, item, norm) < 0) {
        Py_CLEAR(norm);
    }
    return norm;
}

static int
prepare_list(Scorer *self, Prepared *p, PyObject *normalized)
{
    if (!PyList_CheckExact(p->value)) {
        PyObject *list = PyObject_CallOneArg(self->as_list, p->value);
        if (!list) {
            return -1;
        }
        Py_SETREF(p->value, list);
        if (list == Py_None) {
            Py_CLEAR(p->value);
            return 0;
        }
        if (!PyList_CheckExact(list)) {
            PyErr_SetString(PyExc_TypeError, "as_list must return a list or None");
            return -1;
        }
    }
    PyObject *list = p->value;
    p->answer = PySet_New(NULL);
    if (!p->answer) {
        return -1;
    }
    p->nunique = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        Py_INCREF(item); /* __hash__/__eq__/__missing__ may empty the list */
        /* The batch memo: a hit is one lookup; a miss calls its __missing__ (normalise). */
        PyObject *norm = PyDict_GetItemWithError(normalized, item);
        if (norm) {
            Py_INCREF(norm);
        }
        else if (!PyErr_Occurred()) {
            norm = normalize(normalized, item);
        }
        Py_DECREF(item);
        if (!norm) {
            return -1;
        }
        Py_ssize_t before = PySet_GET_SIZE(p->answer);
        int failed = PySet_Add(p->answer, norm);
        Py_DECREF(norm); /* the set holds it now */
        if (failed < 0) {
            return -1;
        }
        if (PySet_GET_SIZE(p->answer) != before && remember_unique(p, norm) < 0) {
            return -1;
        }
    }
    /* Joined once and cut once for every rule of this template. */
    p->text = bound_text(self, PyUnicode_Join(s_separator, list));
    return p->text ? 0 : -1;
}

/* The observedAt of a present value: ``observed_get`` is the object's observed mapping's
 * ``get`` (NULL when it is a dict, read directly; ``observed`` NULL: none known). A text
 * must be an exact str of OBSERVED_CHARS ASCII characters (the loops compare it with memcmp);
 * None means none known. */
static int
prepare_observed(PyObject *observed, PyObject *observed_get, PyObject *key, Prepared *p)
{
    PyObject *text;
    if (!observed) {
        return 0;
    }
    if (!observed_get) {
        text = PyDict_GetItemWithError(observed, key);
        if (!text) {
            return PyErr_Occurred() ? -1 : 0;
        }
        Py_INCREF(text);
    }
    else if (!(text = PyObject_CallOneArg(observed_get, key))) {
        return -1;
    }
    if (text == Py_None) {
        Py_DECREF(text);
        return 0;
    }
    if (!PyUnicode_CheckExact(text) || PyUnicode_GET_LENGTH(text) != OBSERVED_CHARS ||
        !PyUnicode_IS_ASCII(text)) {
        PyErr_Format(PyExc_ValueError,
                     "observedAt must be canonical UTC text of %d ASCII characters "
                     "(YYYY-MM-DDTHH:MM:SS.ffffffZ), got %R",
                     OBSERVED_CHARS, text);
        Py_DECREF(text);
        return -1;
    }
    p->observed = text;
    return 0;
}

/* Fetch and prepare every template value the profile uses, and with ``observed`` (the
 * object's observedAt mapping, or NULL) each present value's observedAt. */
static int
prepare_object(Scorer *self, PyObject *values, PyObject *observed, PyObject *observed_get,
               PyObject *normalized, Prepared *prepared)
{
    int is_dict = PyDict_CheckExact(values);
    for (Py_ssize_t i = 0; i < self->nslots; i++) {
        Prepared *p = &prepared[i];
        PyObject *value;
        if (is_dict) {
            value = PyDict_GetItemWithError(values, self->slots[i].key);
            if (!value && PyErr_Occurred()) {
                return -1;
            }
            Py_XINCREF(value);
        }
        else {
            value = PyObject_CallMethodOneArg(values, s_get, self->slots[i].key);
            if (!value) {
                return -1;
            }
        }
        if (value == Py_None) {
            Py_CLEAR(value);
        }
        p->value = value;
        if (!value) {
            continue;
        }
        if (self->slots[i].kind == SLOT_NUMBER) {
            if (prepare_number(self, p) < 0) {
                return -1;
            }
        }
        else if (self->slots[i].kind == SLOT_LIST) {
            if (prepare_list(self, p, normalized) < 0) {
                return -1;
            }
        }
        if (p->value && prepare_observed(observed, observed_get, self->slots[i].key, p) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static long long
days_from_civil(long long y, unsigned m, unsigned d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

/* The inverse of days_from_civil. */
static void
civil_from_days(long long z, long long *y, unsigned *m, unsigned *d)
{
    z += 719468;
    long long era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (long long)yoe + era * 400 + (*m <= 2);
}

static int
digits(const char *text, int n, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < n; i++) {
        if (text[i] < '0' || text[i] > '9') {
            return 0;
        }
        v = v * 10 + (unsigned)(text[i] - '0');
    }
    *out = v;
    return 1;
}

/* ``observed`` (canonical UTC text) plus ``days`` days into ``out``: whole days in UTC keep
 * the time of day, so only the date part changes. Returns 1, or 0 past 9999-12-31, or -1
 * (ValueError) when the text does not start with a valid date YYYY-MM-DD, as
 * _decay.shift_date does. */
static int
shift_observed(const char *observed, long long days, char *out)
{
    unsigned y, m, d;
    static const unsigned char month_days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (!digits(observed, 4, &y) || observed[4] != '-' || !digits(observed + 5, 2, &m) ||
        observed[7] != '-' || !digits(observed + 8, 2, &d) || y < 1 || m < 1 || m > 12 ||
        d < 1 ||
        d > month_days[m - 1] + (unsigned)(m == 2 && y % 4 == 0 && (y % 100 || y % 400 == 0))) {
        PyErr_Format(PyExc_ValueError,
                     "observedAt must start with a date YYYY-MM-DD, got '%.10s'", observed);
        return -1;
    }
    if (days > MAX_SHIFT_DAYS) {
        return 0;
    }
    long long year;
    unsigned month, day;
    civil_from_days(days_from_civil(y, m, d) + days, &year, &month, &day);
    if (year > 9999) {
        return 0;
    }
    unsigned yy = (unsigned)year; /* 1..9999 */
    out[0] = (char)('0' + yy / 1000);
    out[1] = (char)('0' + yy / 100 % 10);
    out[2] = (char)('0' + yy / 10 % 10);
    out[3] = (char)('0' + yy % 10);
    out[4] = '-';
    out[5] = (char)('0' + month / 10);
    out[6] = (char)('0' + month % 10);
    out[7] = '-';
    out[8] = (char)('0' + day / 10);
    out[9] = (char)('0' + day % 10);
    memcpy(out + 10, observed + 10, OBSERVED_CHARS - 10);
    return 1;
}

/* How many of the rule's decay steps have passed for the observedAt text ``observed``: steps
 * pass as a prefix (their thresholds fall as afterDays rises), so scan from the last. The
 * instant the first step not passed will pass is folded into ``next``. -1 on error. */
static Py_ssize_t
passed_steps(Rule *rule, const char *observed, const char *const *thresholds, NextChange *next)
{
    Py_ssize_t k = 0;
    for (Py_ssize_t j = rule->nsteps; j > 0; j--) {
        const char *threshold = thresholds[rule->steps[j - 1].th];
        if (threshold && memcmp(observed, threshold, OBSERVED_CHARS) < 0) {
            k = j;
            break;
        }
    }
    if (k < rule->nsteps) {
        char when[OBSERVED_CHARS];
        int shifted = shift_observed(observed, rule->steps[k].days, when);
        if (shifted < 0) {
            return -1;
        }
        if (shifted && (!next->set || memcmp(when, next->text, OBSERVED_CHARS) < 0)) {
            memcpy(next->text, when, OBSERVED_CHARS);
            next->set = 1;
        }
    }
    return k;
}

static Py_ssize_t
bisect_right_double(const double *bounds, Py_ssize_t n, double x)
{
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (x < bounds[mid]) {
            hi = mid;
        }
        else {
            lo = mid + 1;
        }
    }
    return lo;
}

static Py_ssize_t
bisect_right_object(PyObject *const *bounds, Py_ssize_t n, PyObject *x)
{
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        int less = PyObject_RichCompareBool(x, bounds[mid], Py_LT);
        if (less < 0) {
            return -1;
        }
        if (less) {
            hi = mid;
        }
        else {
            lo = mid + 1;
        }
    }
    return lo;
}

/* A copy of ``template`` with matchedValue, and each of pointsEarned and observedAt if
 * given, set. */
static PyObject *
contribution(PyObject *template, PyObject *matched, PyObject *points, PyObject *observed)
{
    PyObject *c = PyDict_Copy(template);
    if (!c) {
        return NULL;
    }
    if ((matched && PyDict_SetItem(c, s_matched_value, matched) < 0) ||
        (points && PyDict_SetItem(c, s_points_earned, points) < 0) ||
        (observed && PyDict_SetItem(c, s_observed_at, observed) < 0)) {
        Py_DECREF(c);
        return NULL;
    }
    return c;
}

/* int points summed in C while they fit, as Python ints otherwise. */
static PyObject *
additive_int(Rule *rule, Prepared *p)
{
    long long sum = 0;
    PyObject *big = NULL;
    for (Py_ssize_t i = 0; i < p->nunique; i++) {
        PyObject *points = PyDict_GetItemWithError(rule->points_by_key, p->unique[i]);
        if (!points) {
            if (PyErr_Occurred()) {
                Py_XDECREF(big);
                return NULL;
            }
            continue;
        }
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(points, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            Py_XDECREF(big);
            return NULL;
        }
        long long next;
        if (!overflow && !__builtin_add_overflow(sum, v, &next)) {
            sum = next;
            continue;
        }
        /* Too big for C: carry on in Python ints. */
        PyObject *acc = big ? big : PyLong_FromLongLong(sum);
        if (!big) {
            sum = 0;
        }
        if (!acc) {
            return NULL;
        }
        big = PyNumber_Add(acc, points);
        Py_DECREF(acc);
        if (!big) {
            return NULL;
        }
    }
    if (!big) {
        return PyLong_FromLongLong(sum);
    }
    PyObject *rest = PyLong_FromLongLong(sum);
    if (!rest) {
        Py_DECREF(big);
        return NULL;
    }
    PyObject *total = PyNumber_Add(big, rest);
    Py_DECREF(big);
    Py_DECREF(rest);
    return total;
}

/* pointsEarned of a list rule for a present answer (new reference). */
static PyObject *
list_points(Scorer *self, Rule *rule, Prepared *p)
{
    switch (rule->mode) {
    case MODE_ADDITIVE_INT:
        return additive_int(rule, p);
    case MODE_ADDITIVE_FLOAT:
        return PyObject_CallFunctionObjArgs(self->additive_float, rule->points_by_key,
                                            p->answer, NULL);
    case MODE_BEST_MATCH: {
        /* points_by_key: key -> (points, -position); the largest pair wins (see _rules). */
        PyObject *best = NULL;
        for (Py_ssize_t i = 0; i < p->nunique; i++) {
            PyObject *ranked = PyDict_GetItemWithError(rule->points_by_key, p->unique[i]);
            if (!ranked) {
                if (PyErr_Occurred()) {
                    Py_XDECREF(best);
                    return NULL;
                }
                continue;
            }
            if (!PyTuple_CheckExact(ranked) || PyTuple_GET_SIZE(ranked) != 2) {
                PyErr_SetString(PyExc_TypeError, "best-match points must be (points, -position)");
                Py_XDECREF(best);
                return NULL;
            }
            Py_INCREF(ranked); /* user __eq__ in a later lookup must not free it under us */
            int greater = best ? PyObject_RichCompareBool(ranked, best, Py_GT) : 1;
            if (greater <= 0) {
                Py_DECREF(ranked);
                if (greater < 0) {
                    Py_XDECREF(best);
                    return NULL;
                }
                continue;
            }
            Py_XSETREF(best, ranked);
        }
        if (!best) {
            return Py_NewRef(int_zero);
        }
        PyObject *points = Py_NewRef(PyTuple_GET_ITEM(best, 0));
        Py_DECREF(best);
        return points;
    }
    case MODE_CONTAINS_ALL:
    case MODE_EXACT_MATCH: {
        int holds = PyObject_RichCompareBool(
            rule->keys, p->answer, rule->mode == MODE_CONTAINS_ALL ? Py_LE : Py_EQ);
        if (holds < 0) {
            return NULL;
        }
        PyObject *points = holds ? rule->total : int_zero;
        Py_INCREF(points);
        return points;
    }
    default: { /* MODE_CONTAINS_NONE */
        for (Py_ssize_t i = 0; i < p->nunique; i++) {
            int found = PySet_Contains(rule->keys, p->unique[i]);
            if (found < 0) {
                return NULL;
            }
            if (found) {
                Py_INCREF(int_zero);
                return int_zero;
            }
        }
        Py_INCREF(rule->total);
        return rule->total;
    }
    }
}

/* decay_points(earned, step's factor) (the helper of _rules): steals ``earned``, returns a new
 * reference. A factor of 1 leaves the points; an int factor (then 0) gives int 0 for int
 * points and 0.0 for float ones (-0.0 normalised), as round() does; with a float factor the
 * result depends only on the points' value (3 and 3.0 decay alike), so it is memoised. */
static PyObject *
decay_list_points(Scorer *self, Step *step, PyObject *earned)
{
    if (step->factor_one) {
        return earned;
    }
    if (PyLong_CheckExact(step->factor) &&
        (PyLong_CheckExact(earned) || PyFloat_CheckExact(earned))) {
        int is_int = PyLong_CheckExact(earned);
        Py_DECREF(earned);
        return is_int ? Py_NewRef(int_zero) : PyFloat_FromDouble(0.0);
    }
    int memoised = PyFloat_CheckExact(step->factor) &&
                   (PyLong_CheckExact(earned) || PyFloat_CheckExact(earned));
    if (memoised) {
        PyObject *hit = PyDict_GetItemWithError(step->memo, earned);
        if (hit || PyErr_Occurred()) {
            Py_DECREF(earned);
            return Py_XNewRef(hit);
        }
    }
    PyObject *decayed =
        PyObject_CallFunctionObjArgs(self->decay_points, earned, step->factor, NULL);
    if (decayed && memoised && PyDict_GET_SIZE(step->memo) < self->memo_size &&
        PyDict_SetItem(step->memo, earned, decayed) < 0) {
        Py_CLEAR(decayed);
    }
    Py_DECREF(earned);
    return decayed;
}

/* A copy of ``template`` whose pointsEarned is ``earned``; sets *points on success only. */
static PyObject *
copy_with_points(PyObject *template, PyObject *earned, PyObject **points)
{
    PyObject *c = PyDict_Copy(template);
    if (c) {
        Py_INCREF(earned);
        *points = earned;
    }
    return c;
}

/* One rule for one object: returns the new contribution dict and, on success only, sets
 * *points to a new reference to its pointsEarned; counts a missing value in *missing. With
 * ``thresholds`` (a call with observedAt), a present value's observedAt is stamped on the
 * contribution and the rule's decay applied, its next step folded into ``next``. */
static PyObject *
score_rule(Scorer *self, Rule *rule, Prepared *prepared, const char *const *thresholds,
           NextChange *next, PyObject **points, long *missing)
{
    Prepared *p = &prepared[rule->slot];
    if (!p->value || (rule->kind == RULE_BOOLEAN && p->value != Py_True &&
                      p->value != Py_False)) { /* a boolean rule's value must be a bool */
        *missing += 1;
        return copy_with_points(rule->absent, int_zero, points);
    }
    Step *step = NULL; /* the last decay step passed */
    if (p->observed && rule->nsteps) {
        Py_ssize_t k = passed_steps(rule, PyUnicode_DATA(p->observed), thresholds, next);
        if (k < 0) {
            return NULL;
        }
        step = k ? &rule->steps[k - 1] : NULL;
    }
    PyObject *c, *earned;
    switch (rule->kind) {
    case RULE_BOOLEAN:
        if (p->value == Py_True) {
            c = contribution(step ? step->if_true : rule->if_true, NULL, NULL, p->observed);
            earned = step ? step->on_true : rule->on_true;
        }
        else {
            c = contribution(step ? step->if_false : rule->if_false, NULL, NULL, p->observed);
            earned = step ? step->on_false : rule->on_false;
        }
        if (c) {
            *points = Py_NewRef(earned);
        }
        return c;
    case RULE_RANGE: {
        Py_ssize_t index;
        if (p->nan) {
            index = rule->nentries - 1;
        }
        else if (p->exact && rule->exact_bounds) {
            index = bisect_right_double(rule->bounds_d, rule->nbounds, p->number);
        }
        else if ((index = bisect_right_object(rule->bounds, rule->nbounds, p->value)) < 0) {
            return NULL;
        }
        PyObject *matched =
            bound_text(self, PyUnicode_Concat(p->text, rule->entry_suffix[index]));
        if (!matched) {
            return NULL;
        }
        c = contribution(step ? step->entry_template[index] : rule->entry_template[index],
                         matched, NULL, p->observed);
        Py_DECREF(matched);
        if (c) {
            *points = Py_NewRef(step ? step->entry_points[index] : rule->entry_points[index]);
        }
        return c;
    }
    default: { /* RULE_LIST */
        earned = list_points(self, rule, p);
        if (earned && step) {
            earned = decay_list_points(self, step, earned);
        }
        if (!earned) {
            return NULL;
        }
        c = contribution(step ? step->template : rule->template, p->text, earned, p->observed);
        if (!c) {
            Py_DECREF(earned);
            return NULL;
        }
        *points = earned;
        return c;
    }
    }
}

/* math.fsum of ``n`` points, computed here when every one is an exact float or int that
 * converts to a finite double and no partial overflows: the same algorithm as CPython's
 * math_fsum (Shewchuk's exact partials, then its half-even fix-up), whose result is the
 * correctly rounded sum, so it equals math.fsum. Returns 0 when it cannot (special values,
 * huge ints, other types, too many partials): the caller then calls math.fsum itself. */
#define FSUM_PARTIALS 32
static int
fsum_finite(PyObject *const *terms, Py_ssize_t n, double *out)
{
    double p[FSUM_PARTIALS];
    Py_ssize_t np = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        double x;
        if (PyFloat_CheckExact(terms[k])) {
            x = PyFloat_AS_DOUBLE(terms[k]);
        }
        else if (!exact_double(terms[k], &x)) {
            return 0;
        }
        if (!isfinite(x)) {
            return 0;
        }
        Py_ssize_t i = 0;
        for (Py_ssize_t j = 0; j < np; j++) {
            double y = p[j];
            if (fabs(x) < fabs(y)) {
                double t = x;
                x = y;
                y = t;
            }
            double hi = x + y;
            double yr = hi - x;
            double lo = y - yr;
            if (lo != 0.0) {
                p[i++] = lo;
            }
            x = hi;
        }
        np = i;
        if (x != 0.0) {
            if (!isfinite(x) || np >= FSUM_PARTIALS) {
                return 0; /* intermediate overflow, or more partials than kept here */
            }
            p[np++] = x;
        }
    }
    double hi = 0.0, lo = 0.0;
    if (np > 0) {
        hi = p[--np];
        while (np > 0) {
            double x = hi;
            double y = p[--np];
            hi = x + y;
            double yr = hi - x;
            lo = y - yr;
            if (lo != 0.0) {
                break;
            }
        }
        if (np > 0 && ((lo < 0.0 && p[np - 1] < 0.0) || (lo > 0.0 && p[np - 1] > 0.0))) {
            double y = lo * 2.0;
            double x = hi + y;
            double yr = x - hi;
            if (y == yr) {
                hi = x;
            }
        }
    }
    *out = hi;
    return 1;
}

/* Number → double for the exact integer sum (ints here are bounded by 2**53 in total). */
static double
as_double(PyObject *number)
{
    return PyFloat_CheckExact(number) ? PyFloat_AS_DOUBLE(number) : PyLong_AsDouble(number);
}

static PyObject *
score_of(Scorer *self, Dim *dim, PyObject *earned)
{
    if (dim->mp == 0.0) {
        return PyFloat_FromDouble(0.0);
    }
    PyObject *score = PyDict_GetItemWithError(dim->memo, earned);
    if (score) {
        Py_INCREF(score);
        return score;
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    double raw = 100.0 * PyFloat_AS_DOUBLE(earned) / dim->mp;
    if (raw <= 0.0) {
        score = PyFloat_FromDouble(0.0);
    }
    else if (raw >= 100.0) {
        score = PyFloat_FromDouble(100.0);
    }
    else {
        PyObject *raw_obj = PyFloat_FromDouble(raw);
        if (!raw_obj) {
            return NULL;
        }
        score = PyObject_CallFunctionObjArgs(self->round, raw_obj, int_two, NULL);
        Py_DECREF(raw_obj);
    }
    if (score && PyDict_GET_SIZE(dim->memo) < self->memo_size &&
        PyDict_SetItem(dim->memo, earned, score) < 0) {
        Py_CLEAR(score);
    }
    return score;
}

/* One dimension of one object: a DimensionResult (new reference). */
static PyObject *
score_dimension(Scorer *self, Dim *dim, Prepared *prepared, const char *const *thresholds,
                PyObject **points)
{
    PyObject *contributions = PyList_New(dim->nrules);
    PyObject *earned = NULL, *score = NULL, *coverage = NULL, *result = NULL, *when = NULL;
    NextChange next = {0};
    Py_ssize_t done = 0;
    long missing = 0;
    if (!contributions) {
        return NULL;
    }
    for (; done < dim->nrules; done++) {
        PyObject *c = score_rule(self, &dim->rules[done], prepared, thresholds, &next,
                                 &points[done], &missing);
        if (!c) {
            goto finally;
        }
        PyList_SET_ITEM(contributions, done, c);
    }
    if (dim->int_exact) {
        double sum = 0.0;
        for (Py_ssize_t r = 0; r < dim->nrules; r++) {
            sum += as_double(points[r]);
        }
        if (PyErr_Occurred()) {
            goto finally;
        }
        earned = PyFloat_FromDouble(sum);
    }
    else {
        double sum;
        if (fsum_finite(points, dim->nrules, &sum)) {
            earned = PyFloat_FromDouble(sum);
            goto summed;
        }
        PyObject *terms = PyTuple_New(dim->nrules);
        if (!terms) {
            goto finally;
        }
        for (Py_ssize_t r = 0; r < dim->nrules; r++) {
            Py_INCREF(points[r]);
            PyTuple_SET_ITEM(terms, r, points[r]);
        }
        earned = PyObject_CallOneArg(self->fsum, terms);
        Py_DECREF(terms);
    }
summed:
    if (!earned || !PyFloat_CheckExact(earned) || !(score = score_of(self, dim, earned)) ||
        !(coverage = PyLong_FromLong(dim->total - missing))) {
        if (earned && !PyFloat_CheckExact(earned)) {
            PyErr_SetString(PyExc_TypeError, "fsum must return a float");
        }
        goto finally;
    }
    when = next.set ? PyUnicode_DecodeASCII(next.text, OBSERVED_CHARS, NULL) : Py_NewRef(Py_None);
    if (!when) {
        goto finally;
    }
    /* Positional, as the generated loop does: NamedTuple defaults do not apply here. */
    result = self->result_type->tp_alloc(self->result_type, 7);
    if (!result) {
        goto finally;
    }
    Py_INCREF(dim->max_possible);
    Py_INCREF(dim->total_rules);
    PyTuple_SET_ITEM(result, 0, score);
    PyTuple_SET_ITEM(result, 1, earned);
    PyTuple_SET_ITEM(result, 2, dim->max_possible);
    PyTuple_SET_ITEM(result, 3, coverage);
    PyTuple_SET_ITEM(result, 4, dim->total_rules);
    PyTuple_SET_ITEM(result, 5, contributions);
    PyTuple_SET_ITEM(result, 6, when);
    score = earned = coverage = contributions = when = NULL; /* the result owns them */
finally:
    for (Py_ssize_t r = 0; r < done; r++) {
        Py_CLEAR(points[r]);
    }
    Py_XDECREF(contributions);
    Py_XDECREF(earned);
    Py_XDECREF(score);
    Py_XDECREF(coverage);
    Py_XDECREF(when);
    return result;
}

static PyObject *
score_one(Scorer *self, PyObject *values, PyObject *observed, PyObject *normalized,
          const char *const *thresholds, Prepared *prepared, PyObject **points)
{
    PyObject *out = NULL, *observed_get = NULL;
    if (observed == Py_None) {
        observed = NULL;
    }
    /* As the generated loop does: a mapping's ``get`` is looked up once per object. */
    if (observed && !PyDict_CheckExact(observed) &&
        !(observed_get = PyObject_GetAttr(observed, s_get))) {
        goto finally;
    }
    if (prepare_object(self, values, observed, observed_get, normalized, prepared) < 0) {
        goto finally;
    }
    out = PyDict_New();
    if (!out) {
        goto finally;
    }
    for (Py_ssize_t d = 0; d < self->ndims; d++) {
        PyObject *result = score_dimension(self, &self->dims[d], prepared, thresholds, points);
        if (!result || PyDict_SetItem(out, self->dims[d].name, result) < 0) {
            Py_XDECREF(result);
            Py_CLEAR(out);
            goto finally;
        }
        Py_DECREF(result);
    }
finally:
    Py_XDECREF(observed_get);
    for (Py_ssize_t i = 0; i < self->nslots; i++) {
        prepared_clear(&prepared[i]);
    }
    return out;
}

PyDoc_STRVAR(score_batch_doc,
             "score_batch(values_list, normalized, observed_list=None, thresholds=())\n"
             "    -> list[dict[str, DimensionResult]]\n\n"
             "Score every object of the iterable ``values_list`` (mappings of template id to\n"
             "value).\n"
             "``normalized`` is the batch's memo of normalised list strings (a dict whose\n"
             "``__missing__`` normalises). ``observed_list``, parallel to ``values_list``,\n"
             "gives each object's observedAt texts (a mapping or None); ``thresholds`` the\n"
             "texts of now - afterDays days, one per distinct afterDays of the plan.");

static PyObject *
Scorer_score_batch(Scorer *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!self->plan) {
        PyErr_SetString(PyExc_RuntimeError, "Scorer is not initialised");
        return NULL;
    }
    if (nargs < 2 || nargs > 4) {
        PyErr_SetString(PyExc_TypeError, "score_batch() takes 2 to 4 arguments");
        return NULL;
    }
    PyObject *normalized = args[1];
    if (!PyDict_Check(normalized)) {
        PyErr_SetString(PyExc_TypeError, "score_batch(): normalized must be a dict");
        return NULL;
    }
    PyObject *observed_list = nargs > 2 && args[2] != Py_None ? args[2] : NULL;
    PyObject *observed_seq = NULL;
    const char **thresholds = NULL;
    if (observed_list) {
        /* The thresholds stay alive in args for the whole call. */
        PyObject *given = nargs > 3 ? args[3] : NULL;
        if (!given || !PyTuple_Check(given) || PyTuple_GET_SIZE(given) != self->ndays) {
            PyErr_Format(PyExc_ValueError,
                         "score_batch(): thresholds must be a tuple of %zd texts", self->ndays);
            return NULL;
        }
        thresholds = PyMem_Calloc(self->ndays + 1, sizeof(char *));
        if (!thresholds) {
            PyErr_NoMemory();
            return NULL;
        }
        for (Py_ssize_t i = 0; i < self->ndays; i++) {
            PyObject *text = PyTuple_GET_ITEM(given, i);
            if (!PyUnicode_CheckExact(text) || !PyUnicode_IS_ASCII(text) ||
                (PyUnicode_GET_LENGTH(text) != OBSERVED_CHARS &&
                 PyUnicode_GET_LENGTH(text) != 0)) {
                PyErr_SetString(PyExc_ValueError,
                                "score_batch(): a threshold must be canonical UTC text or ''");
                PyMem_Free(thresholds);
                return NULL;
            }
            /* "": the step cannot pass (nothing is less than the empty string). */
            thresholds[i] = PyUnicode_GET_LENGTH(text) ? PyUnicode_DATA(text) : NULL;
        }
        if (!(observed_seq = PyObject_GetIter(observed_list))) {
            PyMem_Free(thresholds);
            return NULL;
        }
    }
    PyObject *seq = PyObject_GetIter(args[0]);
    if (!seq) {
        Py_XDECREF(observed_seq);
        PyMem_Free(thresholds);
        return NULL;
    }
    Py_ssize_t most = 0;
    int gc_was_enabled = 0;
    for (Py_ssize_t d = 0; d < self->ndims; d++) {
        most = self->dims[d].nrules > most ? self->dims[d].nrules : most;
    }
    Prepared *prepared = PyMem_Calloc(self->nslots + 1, sizeof(Prepared));
    PyObject **points = PyMem_Calloc(most + 1, sizeof(PyObject *));
    PyObject *results = PyList_New(0);
    if (!prepared || !points || !results) {
        if (!results) {
            goto error;
        }
        PyErr_NoMemory();
        goto error;
    }
    /* The loop creates no reference cycles (results hold only tuples, lists, dicts of
     * strings and numbers), so the cyclic GC has nothing to find in it: pause it instead of
     * letting it walk the growing batch every few hundred allocations. */
    gc_was_enabled = PyGC_Disable();
    PyObject *values;
    while ((values = PyIter_Next(seq)) != NULL) {
        PyObject *observed = NULL;
        if (observed_seq && !(observed = PyIter_Next(observed_seq))) {
            Py_DECREF(values);
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError,
                                "observed_list is shorter than values_list");
            }
            goto error;
        }
        PyObject *out = score_one(self, values, observed, normalized, thresholds, prepared,
                                  points);
        Py_DECREF(values);
        Py_XDECREF(observed);
        if (!out || PyList_Append(results, out) < 0) {
            Py_XDECREF(out);
            goto error;
        }
        Py_DECREF(out);
    }
    if (PyErr_Occurred()) {
        goto error;
    }
    if (observed_seq) {
        PyObject *extra = PyIter_Next(observed_seq);
        if (extra || PyErr_Occurred()) {
            if (extra) {
                Py_DECREF(extra);
                PyErr_SetString(PyExc_ValueError, "observed_list is longer than values_list");
            }
            goto error;
        }
    }
    goto done;
error:
    Py_CLEAR(results);
done:
    if (gc_was_enabled) {
        PyGC_Enable();
    }
    if (prepared) {
        for (Py_ssize_t i = 0; i < self->nslots; i++) {
            PyMem_Free(prepared[i].unique);
        }
    }
    PyMem_Free(prepared);
    PyMem_Free(points);
    PyMem_Free(thresholds);
    Py_XDECREF(observed_seq);
    Py_DECREF(seq);
    return results;
}

static PyMethodDef Scorer_methods[] = {
    {"score_batch", (PyCFunction)(void (*)(void))Scorer_score_batch, METH_FASTCALL,
     score_batch_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ScorerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "signalscore.engine._native.Scorer",
    .tp_doc = PyDoc_STR("Scorer(plan): a compiled profile's scoring loop (see _native_plan)."),
    .tp_basicsize = sizeof(Scorer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Scorer_init,
    .tp_dealloc = (destructor)Scorer_dealloc,
    .tp_traverse = (traverseproc)Scorer_traverse,
    .tp_clear = (inquiry)Scorer_clear,
    .tp_methods = Scorer_methods,
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "signalscore.engine._native",
    .m_doc = "The scoring loop of signalscore.engine in C (see _native_plan.py).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    if (PyType_Ready(&ScorerType) < 0) {
        return NULL;
    }
    /* int_two is set last: a failed first import (out of memory) makes the next one retry. */
    if (!int_two) {
        s_matched_value = PyUnicode_InternFromString("matchedValue");
        s_points_earned = PyUnicode_InternFromString("pointsEarned");
        s_observed_at = PyUnicode_InternFromString("observedAt");
        s_separator = PyUnicode_FromString(", ");
        s_get = PyUnicode_InternFromString("get");
        s_strip = PyUnicode_InternFromString("strip");
        s_casefold = PyUnicode_InternFromString("casefold");
        int_zero = PyLong_FromLong(0);
        int_one = PyLong_FromLong(1);
        if (!s_matched_value || !s_points_earned || !s_observed_at || !s_separator || !s_get ||
            !s_strip || !s_casefold || !int_zero || !int_one) {
            return NULL;
        }
        int_two = PyLong_FromLong(2);
        if (!int_two) {
            return NULL;
        }
    }
    PyObject *module = PyModule_Create(&native_module);
    if (!module) {
        return NULL;
    }
    Py_INCREF(&ScorerType);
    if (PyModule_AddObject(module, "Scorer", (PyObject *)&ScorerType) < 0) {
        Py_DECREF(&ScorerType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
