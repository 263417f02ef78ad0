/* Native column splitter of the `delimited` format (see delimited.py).
 *
 * One pass over a batch of records, with the GIL released (an ingest parses files on several
 * threads): each record is cut into its columns, quotes and brackets removed and escapes
 * decoded, exactly as the column regex of `_split_by_pattern` reads it. That regex has one
 * reading of a record at most: a column's first character picks its kind, a bare column ends
 * at the next separator, a bracketed one at the first closing bracket, a quoted one at the
 * first quote that is not escaped (with doubled quotes, at the first quote not followed by
 * another: closing at the first of a pair would leave a quote, not a separator, after it).
 * So a scan left to right finds that reading, or finds that there is none (an unterminated
 * quote or bracket, a column closed before something other than a separator): the record
 * is then not in the format. A property test compares the two on generated and hostile input.
 *
 * split(data, offsets, first, count, sep, quote, escape, open, close)
 *   data:    the records' UTF-8 bytes (an Arrow string array's data buffer)
 *   offsets: int64 offsets of that array (record i is data[offsets[first+i]:offsets[first+i+1]])
 *   sep, quote, escape, open, close: ASCII codes, or -1 for none
 * returns (record_offsets, value_offsets, values, status):
 *   record_offsets: int64[count+1], the columns of record i are values
 *                   record_offsets[i]..record_offsets[i+1] (none for a record of status 0)
 *   value_offsets:  int64[columns+1] into `values`
 *   values:         the columns' bytes, quotes and brackets removed, escapes decoded
 *   status:         uint8[count], 1 when the record was split, 0 when it is not in the format
 *
 * columns(data, offsets, first, count, sep, quote, escape, open, close, wanted)
 *   wanted: a tuple of column positions (0-based) of the batch's one layout
 * returns (found, [(value_offsets, values, validity) per wanted position]):
 *   found:    int64[count], the record's number of columns, or -1 when it is not in the format
 *   validity: Arrow's bitmap (LSB first): set where the record has that column
 * The same reading, for a batch whose records share one layout: only the wanted columns are
 * decoded and kept, each as the buffers of an Arrow large_string array (no list of every
 * column is built to be looked up).
 *
 * The outputs are bytearrays written in place (shrunk once at the end), so handing them to
 * Arrow copies nothing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    int sep, quote, escape, open, close;
} Layout;

/* A column of a record: its value's bytes as written (inside quotes or brackets), and whether
 * they hold escapes or doubled quotes to decode. */
typedef struct {
    int64_t start, end;
    int escaped;
} Token;

/* Find the columns of one record. Returns their number, or -1 when the record is not in the
 * format. `tokens` has room for length + 1 columns (the most a record of `length` bytes has). */
static int64_t scan_record(const uint8_t *text, int64_t length, const Layout *layout, Token *tokens) {
    const int sep = layout->sep, quote = layout->quote, escape = layout->escape;
    int64_t at = 0, count = 0;
    for (;;) {
        int c = at < length ? text[at] : -2; /* -2: the record's end, no character */
        Token token = {at, at, 0};
        if (quote >= 0 && c == quote) {
            int64_t i = at + 1;
            int closed = 0;
            while (i < length) {
                /* Long values (user agents, URLs): jump to the next quote, then to an escape
                 * before it if there is one. */
                const uint8_t *next = memchr(text + i, quote, (size_t)(length - i));
                int64_t stop = next == NULL ? length : next - text;
                if (escape >= 0 && escape != quote) {
                    const uint8_t *escaped = memchr(text + i, escape, (size_t)(stop - i));
                    if (escaped != NULL) stop = escaped - text;
                }
                i = stop;
                if (i >= length) break;
                int d = text[i];
                if (d == quote) {
                    if (escape == quote && i + 1 < length && text[i + 1] == quote) {
                        token.escaped = 1; /* a doubled quote */
                        i += 2;
                        continue;
                    }
                    closed = 1;
                    break;
                }
                if (d == escape) { /* escape != quote here */
                    if (i + 1 >= length) return -1; /* an escape ending the record: no closing quote */
                    token.escaped = 1;
                    i += 2;
                    continue;
                }
                i += 1;
            }
            if (!closed) return -1;
            token.start = at + 1;
            token.end = i;
            at = i + 1; /* after the closing quote */
            if (at < length && text[at] != sep) return -1;
        } else if (layout->open >= 0 && c == layout->open) {
            const uint8_t *next = memchr(text + at + 1, layout->close, (size_t)(length - at - 1));
            if (next == NULL) return -1;
            int64_t i = next - text;
            token.start = at + 1;
            token.end = i;
            at = i + 1;
            if (at < length && text[at] != sep) return -1;
        } else {
            /* Bare (possibly empty): up to the next separator. */
            int64_t i = at;
            while (i < length && text[i] != sep) i += 1;
            token.end = i;
            at = i;
        }
        tokens[count++] = token;
        if (at >= length) break;
        at += 1; /* the separator; a record ending with it has one more, empty, column */
    }
    return count;
}

/* Write a column's value to `out`; return its length. Inside a closed quoted column every
 * escape has a character after it, and quotes only come in doubled pairs. */
static int64_t write_value(const uint8_t *text, const Token *token, const Layout *layout, uint8_t *out) {
    int64_t length = token->end - token->start;
    if (!token->escaped) {
        memcpy(out, text + token->start, (size_t)length);
        return length;
    }
    int64_t written = 0;
    for (int64_t j = token->start; j < token->end;) {
        int d = text[j];
        if (d == layout->quote && layout->escape == layout->quote) {
            out[written++] = (uint8_t)d;
            j += 2;
        } else if (d == layout->escape && layout->escape != layout->quote) {
            int next = text[j + 1];
            if (next != layout->escape && next != layout->quote) out[written++] = (uint8_t)d; /* \x5C stays */
            out[written++] = (uint8_t)next;
            j += 2;
        } else {
            out[written++] = (uint8_t)d;
            j += 1;
        }
    }
    return written;
}

static int code_of(PyObject *args, Py_ssize_t index, int *out) {
    long value = PyLong_AsLong(PyTuple_GET_ITEM(args, index));
    if (value == -1 && PyErr_Occurred()) return 0;
    if (value < -1 || value > 127) {
        PyErr_SetString(PyExc_ValueError, "special characters must be ASCII codes, or -1 for none");
        return 0;
    }
    *out = (int)value;
    return 1;
}

/* The arguments both functions share: the buffers (released by release_batch), the records,
 * the layout's characters, and the longest record's length. */
typedef struct {
    Py_buffer data, offsets;
    const uint8_t *bytes;
    const int64_t *bounds;
    Py_ssize_t first, count;
    int64_t start, stop, longest;
    Layout layout;
} Batch;

static int read_batch(PyObject *args, Batch *batch) {
    batch->first = PyLong_AsSsize_t(PyTuple_GET_ITEM(args, 2));
    batch->count = PyLong_AsSsize_t(PyTuple_GET_ITEM(args, 3));
    if (PyErr_Occurred()) return 0;
    Layout *layout = &batch->layout;
    if (!code_of(args, 4, &layout->sep) || !code_of(args, 5, &layout->quote) || !code_of(args, 6, &layout->escape) ||
        !code_of(args, 7, &layout->open) || !code_of(args, 8, &layout->close))
        return 0;
    if (layout->sep < 0) {
        PyErr_SetString(PyExc_ValueError, "a separator is required");
        return 0;
    }
    if (PyObject_GetBuffer(PyTuple_GET_ITEM(args, 0), &batch->data, PyBUF_SIMPLE) < 0) return 0;
    if (PyObject_GetBuffer(PyTuple_GET_ITEM(args, 1), &batch->offsets, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&batch->data);
        return 0;
    }
    batch->bytes = (const uint8_t *)batch->data.buf;
    batch->bounds = (const int64_t *)batch->offsets.buf;
    Py_ssize_t first = batch->first, count = batch->count;
    if (first < 0 || count < 0 || (Py_ssize_t)((first + count + 1) * sizeof(int64_t)) > batch->offsets.len) {
        PyErr_SetString(PyExc_ValueError, "offsets too short for first + count records");
        goto fail;
    }
    batch->start = batch->bounds[first];
    batch->stop = batch->bounds[first + count];
    batch->longest = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        int64_t from = batch->bounds[first + i], to = batch->bounds[first + i + 1];
        if (from < 0 || to < from || to > batch->data.len) {
            PyErr_SetString(PyExc_ValueError, "offsets must rise and stay within the data");
            goto fail;
        }
        if (to - from > batch->longest) batch->longest = to - from;
    }
    return 1;
fail:
    PyBuffer_Release(&batch->data);
    PyBuffer_Release(&batch->offsets);
    return 0;
}

static void release_batch(Batch *batch) {
    PyBuffer_Release(&batch->data);
    PyBuffer_Release(&batch->offsets);
}

static PyObject *split(PyObject *self, PyObject *args) {
    (void)self;
    if (PyTuple_GET_SIZE(args) != 9) {
        PyErr_SetString(PyExc_TypeError, "split(data, offsets, first, count, sep, quote, escape, open, close)");
        return NULL;
    }
    Batch batch;
    if (!read_batch(args, &batch)) return NULL;
    const Py_ssize_t count = batch.count;
    PyObject *result = NULL;
    /* Bounds: a record has at most one column more than bytes, and its values are never
     * longer than its text (quotes, brackets and escapes are only ever removed); pages of
     * the bounds that are never written are never touched. */
    PyObject *record_array = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)((count + 1) * sizeof(int64_t)));
    PyObject *offset_array = PyByteArray_FromStringAndSize(
        NULL, (Py_ssize_t)((batch.stop - batch.start + count + 1) * sizeof(int64_t)));
    PyObject *value_array = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(batch.stop - batch.start));
    PyObject *status_array = PyByteArray_FromStringAndSize(NULL, count);
    Token *tokens = PyMem_Malloc((size_t)(batch.longest + 1) * sizeof(Token));
    if (tokens == NULL) PyErr_NoMemory();
    if (!record_array || !offset_array || !value_array || !status_array || !tokens) goto done;
    int64_t *record_offsets = (int64_t *)PyByteArray_AS_STRING(record_array);
    int64_t *value_offsets = (int64_t *)PyByteArray_AS_STRING(offset_array);
    uint8_t *values = (uint8_t *)PyByteArray_AS_STRING(value_array);
    uint8_t *status = (uint8_t *)PyByteArray_AS_STRING(status_array);
    int64_t columns = 0, used = 0;
    Py_BEGIN_ALLOW_THREADS
    value_offsets[0] = 0;
    record_offsets[0] = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        const uint8_t *text = batch.bytes + batch.bounds[batch.first + i];
        int64_t found = scan_record(text, batch.bounds[batch.first + i + 1] - batch.bounds[batch.first + i],
                                    &batch.layout, tokens);
        status[i] = found >= 0;
        for (int64_t c = 0; c < found; c++) {
            used += write_value(text, &tokens[c], &batch.layout, values + used);
            value_offsets[++columns] = used;
        }
        record_offsets[i + 1] = columns;
    }
    Py_END_ALLOW_THREADS
    if (PyByteArray_Resize(offset_array, (Py_ssize_t)((columns + 1) * sizeof(int64_t))) < 0 ||
        PyByteArray_Resize(value_array, (Py_ssize_t)used) < 0)
        goto done;
    result = PyTuple_Pack(4, record_array, offset_array, value_array, status_array);
done:
    Py_XDECREF(record_array);
    Py_XDECREF(offset_array);
    Py_XDECREF(value_array);
    Py_XDECREF(status_array);
    PyMem_Free(tokens);
    release_batch(&batch);
    return result;
}

/* Arrow's string view of one value: inline when at most 12 bytes, else a prefix and where
 * the bytes are (buffer 0: the records' text itself, buffer 1: decoded values). */
static void write_view(uint8_t *view, const uint8_t *value, int64_t length, int32_t buffer, int64_t offset) {
    int32_t length32 = (int32_t)length;
    memset(view, 0, 16);
    memcpy(view, &length32, 4);
    if (length <= 12) {
        memcpy(view + 4, value, (size_t)length);
    } else {
        int32_t offset32 = (int32_t)offset;
        memcpy(view + 4, value, 4);
        memcpy(view + 8, &buffer, 4);
        memcpy(view + 12, &offset32, 4);
    }
}

static PyObject *columns(PyObject *self, PyObject *args) {
    (void)self;
    if (PyTuple_GET_SIZE(args) != 10 || !PyTuple_Check(PyTuple_GET_ITEM(args, 9))) {
        PyErr_SetString(PyExc_TypeError, "columns(data, offsets, first, count, sep, quote, escape, open, close, wanted)");
        return NULL;
    }
    PyObject *wanted_tuple = PyTuple_GET_ITEM(args, 9);
    const Py_ssize_t wanted_count = PyTuple_GET_SIZE(wanted_tuple);
    for (Py_ssize_t k = 0; k < wanted_count; k++) {
        long long position = PyLong_AsLongLong(PyTuple_GET_ITEM(wanted_tuple, k));
        if (position < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "column positions must be >= 0");
            return NULL;
        }
    }
    Batch batch;
    if (!read_batch(args, &batch)) return NULL;
    const Py_ssize_t count = batch.count;
    if (batch.stop > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "string views address at most 2 GiB of text");
        release_batch(&batch);
        return NULL;
    }
    PyObject *result = NULL, *outputs = PyList_New(wanted_count);
    PyObject *found_array = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(count * sizeof(int64_t)));
    PyObject *decoded_array = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(batch.stop - batch.start) * wanted_count);
    Token *tokens = PyMem_Malloc((size_t)(batch.longest + 1) * sizeof(Token));
    int64_t *wanted = PyMem_Calloc((size_t)wanted_count + 1, sizeof(int64_t));
    uint8_t **out_views = PyMem_Calloc((size_t)wanted_count + 1, sizeof(uint8_t *));
    uint8_t **out_validity = PyMem_Calloc((size_t)wanted_count + 1, sizeof(uint8_t *));
    if (!tokens || !wanted || !out_views || !out_validity) PyErr_NoMemory();
    if (!outputs || !found_array || !decoded_array || PyErr_Occurred()) goto done;
    for (Py_ssize_t k = 0; k < wanted_count; k++) {
        wanted[k] = PyLong_AsLongLong(PyTuple_GET_ITEM(wanted_tuple, k));
        PyObject *column = Py_BuildValue("(NN)", PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(count * 16)),
                                         PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)((count + 7) / 8)));
        if (column == NULL) goto done;
        PyList_SET_ITEM(outputs, k, column);
        out_views[k] = (uint8_t *)PyByteArray_AS_STRING(PyTuple_GET_ITEM(column, 0));
        out_validity[k] = (uint8_t *)PyByteArray_AS_STRING(PyTuple_GET_ITEM(column, 1));
        memset(out_validity[k], 0, (size_t)((count + 7) / 8));
    }
    int64_t *found = (int64_t *)PyByteArray_AS_STRING(found_array);
    uint8_t *decoded = (uint8_t *)PyByteArray_AS_STRING(decoded_array);
    int64_t decoded_used = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        int64_t from = batch.bounds[batch.first + i];
        const uint8_t *text = batch.bytes + from;
        int64_t columns_found = scan_record(text, batch.bounds[batch.first + i + 1] - from, &batch.layout, tokens);
        found[i] = columns_found;
        for (Py_ssize_t k = 0; k < wanted_count; k++) {
            uint8_t *view = out_views[k] + i * 16;
            if (columns_found > wanted[k]) {
                const Token *token = &tokens[wanted[k]];
                if (token->escaped) { /* decoded into buffer 1 */
                    int64_t length = write_value(text, token, &batch.layout, decoded + decoded_used);
                    write_view(view, decoded + decoded_used, length, 1, decoded_used);
                    decoded_used += length;
                } else { /* the bytes where they are, in buffer 0 */
                    write_view(view, text + token->start, token->end - token->start, 0, from + token->start);
                }
                out_validity[k][i / 8] |= (uint8_t)(1u << (i % 8));
            } else {
                memset(view, 0, 16);
            }
        }
    }
    Py_END_ALLOW_THREADS
    if (PyByteArray_Resize(decoded_array, (Py_ssize_t)decoded_used) < 0) goto done;
    result = PyTuple_Pack(3, found_array, decoded_array, outputs);
done:
    Py_XDECREF(found_array);
    Py_XDECREF(decoded_array);
    Py_XDECREF(outputs);
    PyMem_Free(tokens);
    PyMem_Free(wanted);
    PyMem_Free(out_views);
    PyMem_Free(out_validity);
    release_batch(&batch);
    return result;
}

static PyMethodDef methods[] = {
    {"split", split, METH_VARARGS, "Split records into columns (see the module's source for the contract)."},
    {"columns", columns, METH_VARARGS, "The wanted columns of records of one layout (see the module's source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_tokenizer", "Native column splitter of `delimited`.",
                                    -1, methods};

PyMODINIT_FUNC PyInit__tokenizer(void) { return PyModule_Create(&module); }
