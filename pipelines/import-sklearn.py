#!/usr/bin/env python3
"""Convert a fitted scikit-learn IsolationForest (and optional StandardScaler)
into the pf-model JSON format (format_version 1) read by pf-score.

The pickles are read WITHOUT importing scikit-learn: every sklearn class is
replaced by a stub that only records its constructor arguments and pickled
state, so files written by any scikit-learn version can be converted (also
versions the installed scikit-learn refuses to load). Only numpy and joblib
are needed (PyYAML is used for --old-config when it is installed).

Pickle files can run code when loaded. This script only lets through the
numpy, joblib, builtins and copyreg names that plain data needs; anything
else in the file is refused with an error.
"""

import argparse
import bz2
import datetime
import gzip
import inspect
import io
import json
import lzma
import math
import os
import pickle
import sys
import tempfile
import uuid
import zlib

try:
    import numpy as np
except ImportError:  # pragma: no cover - reported in main()
    np = None

IMPORTER_VERSION = 1
FORMAT_VERSION = 1

EXAMPLE = """\
example:
  pipelines/import-sklearn.py \\
      --model models/anomaly_det.pkl --scaler models/scaler.pkl \\
      --features service_encoded,event_encoded,hour,minute,dayofweek,msg_len \\
      --old-config config/config.yaml --out models/model.json

--features also accepts a JSON file holding a list of names (such as the old
system's features/selected_features.json). Without --features the names are
taken from the pickles' feature_names_in_, else from the old config's
anomaly.features, else f0..fN-1.

exit status: 0 converted; 1 a file is unreadable, unsafe or not what was
expected; 2 usage error (bad or missing arguments, missing input file).
"""


class UsageError(Exception):
    """Wrong arguments: exit status 2."""


class BadFileError(Exception):
    """A file exists but cannot be converted: exit status 1."""


# --------------------------------------------------------------------------
# Stubs standing in for scikit-learn classes


class SklearnStub:
    """Stands in for any scikit-learn class found in a pickle.

    Records constructor arguments (REDUCE / NEWOBJ), the state given to
    __setstate__ (BUILD), and items or list entries set on it, and does
    nothing else.
    """

    _sk_module = "?"
    _sk_name = "?"

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        self._sk_args = args
        self._sk_kwargs = kwargs
        self._sk_state = None
        self._sk_items = {}
        self._sk_list = []
        return self

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self._sk_state = state

    def __setitem__(self, key, value):
        self._sk_items[key] = value

    def append(self, value):
        self._sk_list.append(value)

    def extend(self, values):
        self._sk_list.extend(values)

    def __repr__(self):
        return "<sklearn stub %s.%s>" % (self._sk_module, self._sk_name)

    @property
    def sk_qualname(self):
        return "%s.%s" % (self._sk_module, self._sk_name)

    def sk_dict(self):
        """The pickled attribute dict (state may be (dict, slots))."""
        st = self._sk_state
        if st is None:
            return {}
        if isinstance(st, tuple) and len(st) == 2:
            merged = {}
            for part in st:
                if isinstance(part, dict):
                    merged.update(part)
            return merged
        if isinstance(st, dict):
            return st
        return {}


_STUB_CLASSES = {}


def _stub_class(module, name):
    key = (module, name)
    cls = _STUB_CLASSES.get(key)
    if cls is None:
        cls = type(str(name), (SklearnStub,), {"_sk_module": module, "_sk_name": name})
        _STUB_CLASSES[key] = cls
    return cls


# --------------------------------------------------------------------------
# Restricted class resolution

_SAFE_BUILTINS = {
    "object", "set", "frozenset", "slice", "complex", "bytearray", "bytes",
    "str", "int", "float", "bool", "list", "dict", "tuple", "range",
}
_SAFE_COPYREG = {"_reconstructor", "__newobj__", "__newobj_ex__"}
# numpy callables that only rebuild arrays, dtypes and scalars
_SAFE_NUMPY_FUNCS = {
    ("multiarray", "_reconstruct"),
    ("multiarray", "scalar"),
    ("numeric", "_frombuffer"),
}
_SAFE_NUMPY_RANDOM = {
    "__randomstate_ctor", "__bit_generator_ctor", "__generator_ctor",
}
_REFUSED_JOBLIB_COMPAT = {"NDArrayWrapper", "ZNDArrayWrapper"}


def _refuse(module, name, why=""):
    raise BadFileError(
        "refusing to load %s.%s from the pickle%s: only scikit-learn, numpy "
        "array, joblib array and basic Python types are allowed (a pickle can "
        "run code when loaded). Is this really a scikit-learn model file?"
        % (module, name, (" (" + why + ")") if why else "")
    )


def _import_attr(modname, name):
    mod = __import__(modname, fromlist=[name])
    return getattr(mod, name)


def _resolve_numpy(module, name):
    parts = module.split(".")
    if len(parts) >= 3 and parts[1] in ("core", "_core") and (parts[2], name) in _SAFE_NUMPY_FUNCS:
        # numpy 2 renamed numpy.core to numpy._core; accept both spellings
        for base in ("numpy._core", "numpy.core"):
            try:
                return _import_attr(base + "." + parts[2], name)
            except (ImportError, AttributeError):
                continue
        _refuse(module, name, "not available in this numpy")
    if module == "numpy.random._pickle" and name in _SAFE_NUMPY_RANDOM:
        return _import_attr(module, name)
    if module in ("numpy", "numpy.dtypes") or module.startswith("numpy.random."):
        try:
            obj = _import_attr(module, name)
        except (ImportError, AttributeError):
            _refuse(module, name, "unknown numpy name")
        if isinstance(obj, type) and (
            obj is np.ndarray
            or issubclass(obj, (np.dtype, np.generic))
            or (module.startswith("numpy.random.") and obj.__name__ in (
                "RandomState", "Generator", "MT19937", "PCG64", "PCG64DXSM",
                "Philox", "SFC64", "BitGenerator"))
        ):
            return obj
    _refuse(module, name)


def resolve_global(module, name):
    if module == "__builtin__":
        module = "builtins"
    elif module == "copy_reg":
        module = "copyreg"
    if module.startswith("sklearn.externals.joblib"):
        # scikit-learn < 0.23 shipped its own copy of joblib
        module = "joblib" + module[len("sklearn.externals.joblib"):]
    if module == "sklearn" or module.startswith("sklearn."):
        return _stub_class(module, name)
    if module == "numpy" or module.startswith("numpy."):
        return _resolve_numpy(module, name)
    if module == "builtins" and name in _SAFE_BUILTINS:
        return _import_attr("builtins", name)
    if module == "copyreg" and name in _SAFE_COPYREG:
        return _import_attr("copyreg", name)
    if module == "_codecs" and name == "encode":  # bytes in protocol-2 pickles
        import _codecs
        return _codecs.encode
    if module == "collections" and name == "OrderedDict":
        import collections
        return collections.OrderedDict
    if module in ("joblib.numpy_pickle", "joblib.numpy_pickle_compat"):
        if name in _REFUSED_JOBLIB_COMPAT:
            raise BadFileError(
                "this file was written by joblib < 0.10 (arrays in companion "
                "files), which is not supported: load and re-save it with a "
                "newer joblib")
        if name == "NumpyArrayWrapper":
            try:
                return _import_attr("joblib.numpy_pickle", name)
            except ImportError:
                raise BadFileError("this is a joblib file: install joblib (pip install joblib) to read it")
    _refuse(module, name)


class RestrictedUnpickler(pickle.Unpickler):
    """Plain pickle loading with the same restrictions."""

    def find_class(self, module, name):
        return resolve_global(module, name)


def _plain_load(fobj):
    return RestrictedUnpickler(fobj).load()


def _open_plain(path):
    """Open a possibly compressed plain pickle."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    elif data[:3] == b"BZh":
        data = bz2.decompress(data)
    elif data[:6] == b"\xfd7zXZ\x00":
        data = lzma.decompress(data)
    elif data[:1] == b"x":
        try:
            data = zlib.decompress(data)
        except zlib.error:
            pass
    return io.BytesIO(data)


def _joblib_load(path):
    """Load with joblib's NumpyUnpickler (restricted). Raises ImportError or
    AttributeError when this joblib does not have the expected internals."""
    from joblib import numpy_pickle as jnp
    from joblib import numpy_pickle_utils as jnpu

    base = jnp.NumpyUnpickler
    wrapper_cls = jnp.NumpyArrayWrapper
    init_params = list(inspect.signature(base.__init__).parameters)
    read_params = list(inspect.signature(wrapper_cls.read).parameters)

    class JoblibRestrictedUnpickler(base):
        dispatch = base.dispatch.copy()

        def __init__(self, filename, fobj):
            if "ensure_native_byte_order" in init_params:
                base.__init__(self, filename, fobj, True, mmap_mode=None)
            else:
                base.__init__(self, filename, fobj, mmap_mode=None)

        def find_class(self, module, name):
            return resolve_global(module, name)

        def load_build(self):
            pickle._Unpickler.load_build(self)
            top = self.stack[-1]
            if not isinstance(top, wrapper_cls):
                return
            self.stack.pop()
            if top.dtype.hasobject:
                # object arrays are a nested pickle stream: read it with the
                # same restrictions whatever this joblib version does
                inner = RestrictedUnpickler(self.file_handle)
                array = inner.load()
                if not isinstance(array, np.ndarray):
                    raise BadFileError("malformed joblib object array")
            elif "ensure_native_byte_order" in read_params:
                array = top.read(self, True)
            else:
                array = top.read(self)
            self.stack.append(array)

        dispatch[pickle.BUILD[0]] = load_build

    opener = getattr(jnpu, "_validate_fileobject_and_memmap", None)
    if opener is None:
        opener = getattr(jnpu, "_read_fileobject")
    with open(path, "rb") as f:
        with opener(f, path, None) as opened:
            fobj = opened[0] if isinstance(opened, tuple) else opened
            if isinstance(fobj, str):
                raise BadFileError(
                    "%s was written by joblib < 0.10, which is not supported: "
                    "load and re-save it with a newer joblib" % path)
            return JoblibRestrictedUnpickler(path, fobj).load()


def load_pickle(path, what):
    """Load a joblib or plain pickle file with sklearn classes stubbed."""
    joblib_error = None
    try:
        return _joblib_load(path)
    except BadFileError:
        raise
    except (ImportError, AttributeError) as e:
        joblib_error = e  # no usable joblib: plain pickle below
    except Exception as e:  # not a joblib file? try plain pickle
        joblib_error = e
    try:
        return _plain_load(_open_plain(path))
    except BadFileError:
        raise
    except Exception as e:
        raise BadFileError(
            "cannot read %s %s as a joblib or pickle file (joblib: %s; pickle: %s)"
            % (what, path, joblib_error, e))


# --------------------------------------------------------------------------
# Extracting the model


def _is_stub(obj, name=None):
    return isinstance(obj, SklearnStub) and (name is None or obj._sk_name == name)


def _describe(obj):
    if isinstance(obj, SklearnStub):
        return obj.sk_qualname
    return type(obj).__name__


def _unwrap_pipeline(obj, path):
    """Return (iforest, scaler_or_None) from an IsolationForest or a Pipeline."""
    if _is_stub(obj, "Pipeline"):
        steps = obj.sk_dict().get("steps") or []
        forest = scaler = None
        for step in steps:
            est = step[1] if isinstance(step, (tuple, list)) and len(step) >= 2 else None
            if _is_stub(est, "IsolationForest"):
                forest = est
            elif _is_stub(est, "StandardScaler"):
                if forest is not None:
                    raise BadFileError("%s: the Pipeline scales after the IsolationForest" % path)
                scaler = est
            elif est is not None and est != "passthrough" and forest is None:
                raise BadFileError(
                    "%s: the Pipeline has a step %s that cannot be converted; only "
                    "StandardScaler followed by IsolationForest is supported" % (path, _describe(est)))
        if forest is None:
            raise BadFileError("%s: the Pipeline holds no IsolationForest" % path)
        return forest, scaler
    if not _is_stub(obj, "IsolationForest"):
        raise BadFileError(
            "%s holds a %s, not a scikit-learn IsolationForest: pass the fitted "
            "IsolationForest with --model" % (path, _describe(obj)))
    return obj, None


def _as_int(value, what, path):
    try:
        if isinstance(value, bool):
            raise TypeError
        out = int(value)
        if out != value:
            raise ValueError
        return out
    except (TypeError, ValueError):
        raise BadFileError("%s: %s is %r, expected an integer" % (path, what, value))


def _as_float(value, what, path):
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise BadFileError("%s: %s is %r, expected a number" % (path, what, value))
    if not math.isfinite(out):
        raise BadFileError("%s: %s is %r, expected a finite number" % (path, what, value))
    return out


def _vector(value, what, path):
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadFileError("%s: %s is not a numeric array" % (path, what))
    if arr.ndim != 1:
        raise BadFileError("%s: %s has shape %s, expected one value per feature" % (path, what, arr.shape))
    if not np.all(np.isfinite(arr)):
        raise BadFileError("%s: %s contains NaN or infinite values" % (path, what))
    return [float(v) for v in arr]


_NODE_FIELDS = ("left_child", "right_child", "feature", "threshold", "n_node_samples")


def convert_tree(est, features_map, index, path):
    where = "%s: tree %d" % (path, index)
    if not isinstance(est, SklearnStub):
        raise BadFileError("%s is a %s, not an ExtraTreeRegressor" % (where, _describe(est)))
    tree = est.sk_dict().get("tree_")
    if not _is_stub(tree, "Tree"):
        raise BadFileError("%s has no fitted tree_ (got %s)" % (where, _describe(tree)))
    state = tree.sk_dict()
    nodes = state.get("nodes")
    if not isinstance(nodes, np.ndarray) or nodes.dtype.names is None:
        raise BadFileError("%s: tree_ state has no node array" % where)
    missing = [f for f in _NODE_FIELDS if f not in nodes.dtype.names]
    if missing:
        raise BadFileError("%s: node array lacks fields %s" % (where, ", ".join(missing)))
    node_count = state.get("node_count", len(nodes))
    if node_count != len(nodes) or len(nodes) == 0:
        raise BadFileError("%s: node_count %r does not match %d nodes" % (where, node_count, len(nodes)))
    n_local = len(features_map)
    if tree._sk_args and isinstance(tree._sk_args[0], (int, np.integer)) and int(tree._sk_args[0]) != n_local:
        raise BadFileError(
            "%s was fitted on %d features but estimators_features_ lists %d"
            % (where, int(tree._sk_args[0]), n_local))

    left = nodes["left_child"].astype(np.int64)
    right = nodes["right_child"].astype(np.int64)
    feat = nodes["feature"].astype(np.int64)
    thr = nodes["threshold"].astype(np.float64)
    nsamp = nodes["n_node_samples"].astype(np.int64)
    n = len(nodes)
    out = {"feature": [], "threshold": [], "left": [], "right": [], "n_samples": []}
    for i in range(n):
        l, r = int(left[i]), int(right[i])
        if nsamp[i] < 1:
            raise BadFileError("%s node %d has n_node_samples %d" % (where, i, nsamp[i]))
        if l == -1 or r == -1:
            if l != r:
                raise BadFileError("%s node %d has only one child" % (where, i))
            out["feature"].append(-1)
            out["threshold"].append(0.0)
        else:
            # sklearn numbers children after their parent; this also rules out cycles
            if not (i < l < n and i < r < n):
                raise BadFileError("%s node %d has child ids %d, %d out of range" % (where, i, l, r))
            f = int(feat[i])
            if not 0 <= f < n_local:
                raise BadFileError("%s node %d splits on feature %d of %d" % (where, i, f, n_local))
            t = float(thr[i])
            if not math.isfinite(t):
                raise BadFileError("%s node %d has threshold %r" % (where, i, t))
            out["feature"].append(int(features_map[f]))
            out["threshold"].append(t)
        out["left"].append(l)
        out["right"].append(r)
        out["n_samples"].append(int(nsamp[i]))
    # every node but the root must be reached exactly once
    seen = [0] * n
    for i in range(n):
        if out["left"][i] != -1:
            seen[out["left"][i]] += 1
            seen[out["right"][i]] += 1
    if seen[0] != 0 or any(c != 1 for c in seen[1:]):
        raise BadFileError("%s: nodes do not form a single tree" % where)
    weighted = nodes["weighted_n_node_samples"] if "weighted_n_node_samples" in nodes.dtype.names else None
    return out, weighted, nsamp


def convert_forest(model, path, warnings_out):
    st = model.sk_dict()
    if "estimators_" not in st:
        raise BadFileError("%s: the IsolationForest is not fitted (no estimators_)" % path)
    estimators = st["estimators_"]
    if not isinstance(estimators, list) or not estimators:
        raise BadFileError("%s: estimators_ is empty" % path)
    n_features = st.get("n_features_in_", st.get("n_features_"))
    if n_features is None:
        raise BadFileError("%s: the IsolationForest has no n_features_in_" % path)
    n_features = _as_int(n_features, "n_features_in_", path)
    feats = st.get("estimators_features_")
    if feats is None:
        feats = [np.arange(n_features)] * len(estimators)
    if len(feats) != len(estimators):
        raise BadFileError("%s: %d estimators but %d estimators_features_" % (path, len(estimators), len(feats)))
    max_features = st.get("_max_features", n_features)
    if max_features == n_features:
        # sklearn scores with the full X (no column subset) in this case
        ident = np.arange(n_features)
        for i, f in enumerate(feats):
            if not np.array_equal(np.asarray(f), ident):
                warnings_out.append(
                    "estimators_features_[%d] is not the identity although all features are "
                    "used; following sklearn's scoring, which ignores it" % i)
                break
        feats = [ident] * len(estimators)
    for i, f in enumerate(feats):
        f = np.asarray(f)
        if f.ndim != 1 or np.any(f < 0) or np.any(f >= n_features):
            raise BadFileError("%s: estimators_features_[%d] has out-of-range columns" % (path, i))

    max_samples = st.get("max_samples_", st.get("_max_samples"))
    if max_samples is None:
        raise BadFileError("%s: the IsolationForest has no max_samples_" % path)
    max_samples = _as_int(max_samples, "max_samples_", path)
    if "_max_samples" in st and st["_max_samples"] != max_samples:
        warnings_out.append("max_samples_ (%r) differs from _max_samples (%r); sklearn scores with _max_samples"
                            % (max_samples, st["_max_samples"]))
        max_samples = _as_int(st["_max_samples"], "_max_samples", path)
    if max_samples < 1:
        raise BadFileError("%s: max_samples_ is %d" % (path, max_samples))
    if "offset_" not in st:
        raise BadFileError("%s: the IsolationForest has no offset_" % path)
    offset = _as_float(st["offset_"], "offset_", path)
    contamination = st.get("contamination", "auto")
    if contamination == "legacy" or st.get("behaviour") == "old":
        raise BadFileError(
            "%s was fitted by scikit-learn < 0.22 with contamination='legacy' or "
            "behaviour='old', whose scores follow other rules: refit the model" % path)
    if not (isinstance(contamination, str) and contamination == "auto"):
        contamination = _as_float(contamination, "contamination", path)
    bootstrap = bool(st.get("bootstrap", False))
    if bootstrap:
        warnings_out.append(
            "the forest was fitted with bootstrap=True: scores convert exactly, but "
            "SHAP explanations may differ from shap's (it weights nodes by the "
            "bootstrap-weighted sample counts, which are not stored)")

    trees = []
    weighted_differs = False
    for i, est in enumerate(estimators):
        tree, weighted, nsamp = convert_tree(est, np.asarray(feats[i]), i, path)
        if weighted is not None and not np.array_equal(np.asarray(weighted, dtype=np.float64),
                                                       nsamp.astype(np.float64)):
            weighted_differs = True
        trees.append(tree)
    if weighted_differs and not bootstrap:
        warnings_out.append(
            "weighted_n_node_samples differs from n_node_samples (fitted with "
            "sample_weight?): SHAP explanations may differ from shap's")

    forest = {
        "max_samples": max_samples,
        "offset": offset,
        "contamination": contamination,
        "trees": trees,
    }
    meta = {
        "bootstrap": bootstrap,
        "n_estimators": len(estimators),
        "n_features": n_features,
        "max_features": _as_int(max_features, "_max_features", path),
    }
    version = st.get("_sklearn_version")
    if isinstance(version, str):
        meta["sklearn_version"] = version
    rs = st.get("random_state")
    if isinstance(rs, int) and not isinstance(rs, bool):
        meta["random_state"] = rs
    names = st.get("feature_names_in_")
    return forest, meta, n_features, _names_list(names)


def _names_list(names):
    if names is None:
        return None
    try:
        out = [str(n) for n in list(names)]
    except TypeError:
        return None
    return out or None


def convert_scaler(scaler, path, n_features):
    if not _is_stub(scaler, "StandardScaler"):
        raise BadFileError(
            "%s holds a %s; only a scikit-learn StandardScaler can be converted "
            "(for another scaler, export its parameters by hand)" % (path, _describe(scaler)))
    st = scaler.sk_dict()
    with_mean = bool(st.get("with_mean", True))
    with_std = bool(st.get("with_std", True))
    n = st.get("n_features_in_")
    mean = st.get("mean_")
    scale = st.get("scale_")
    if with_mean and mean is None:
        raise BadFileError("%s: the StandardScaler has with_mean=True but no mean_ (not fitted?)" % path)
    if with_std and scale is None:
        raise BadFileError("%s: the StandardScaler has with_std=True but no scale_ (not fitted?)" % path)
    for arr in (mean, scale):
        if arr is not None and n is None:
            n = len(arr)
    if n is None:
        n = n_features
    n = _as_int(n, "n_features_in_", path)
    if n != n_features:
        raise BadFileError(
            "the scaler %s has %d features but the model has %d: pass the scaler "
            "that was fitted together with this model" % (path, n, n_features))
    mean_v = _vector(mean, "mean_", path) if with_mean else [0.0] * n
    scale_v = _vector(scale, "scale_", path) if with_std else [1.0] * n
    if len(mean_v) != n or len(scale_v) != n:
        raise BadFileError("%s: mean_/scale_ lengths (%d, %d) do not match n_features_in_ %d"
                           % (path, len(mean_v), len(scale_v), n))
    if any(s == 0.0 for s in scale_v):
        raise BadFileError("%s: scale_ contains 0" % path)
    meta = {"with_mean": with_mean, "with_std": with_std}
    version = st.get("_sklearn_version")
    if isinstance(version, str):
        meta["sklearn_version"] = version
    return {"mean": mean_v, "scale": scale_v}, meta, _names_list(st.get("feature_names_in_"))


# --------------------------------------------------------------------------
# Old configuration


def _strip_comment(line):
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _unquote(s):
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1]
    return s


def parse_simple_yaml(text):
    """Parse the block-mapping subset of YAML the old config uses into nested
    dicts of strings (list entries are collected as lists of strings)."""
    root = {}
    stack = [(-1, root)]  # (indent, container)
    pending = None  # (indent, parent dict, key) of a "key:" with no value yet
    for raw in text.splitlines():
        line = _strip_comment(raw).rstrip()
        if not line.strip() or line.strip() in ("---", "..."):
            continue
        indent = len(line) - len(line.lstrip(" "))
        content = line.strip()
        if pending is not None:
            p_indent, p_parent, p_key = pending
            pending = None
            if indent > p_indent:
                container = [] if content.startswith("- ") or content == "-" else {}
                p_parent[p_key] = container
                stack.append((p_indent, container))
            else:
                p_parent[p_key] = ""
        while len(stack) > 1 and indent <= stack[-1][0]:
            stack.pop()
        container = stack[-1][1]
        if content.startswith("- ") or content == "-":
            if isinstance(container, list):
                container.append(_unquote(content[1:]))
            continue
        if not isinstance(container, dict):
            continue
        if content[0] in "'\"":
            end = content.find(content[0], 1)
            key = content[1:end]
            rest = content[end + 1:].lstrip()
            if not rest.startswith(":"):
                continue
            value = rest[1:].strip()
        else:
            if ":" not in content:
                continue
            key, value = content.split(":", 1)
            key = key.strip()
            value = value.strip()
        if value == "":
            pending = (indent, container, key)
        elif value.startswith("[") and value.endswith("]"):
            inner = value[1:-1].strip()
            container[key] = [_unquote(v) for v in inner.split(",")] if inner else []
        else:
            container[key] = _unquote(value)
    if pending is not None:
        pending[1][pending[2]] = ""
    return root


def load_old_config(path):
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise UsageError("cannot read --old-config %s: %s" % (path, e.strerror or e))
    try:
        import yaml  # optional

        try:
            # BaseLoader keeps every scalar a string (no on/off/yes booleans)
            doc = yaml.load(text, Loader=yaml.BaseLoader)
        except yaml.YAMLError as e:
            raise BadFileError("%s is not valid YAML: %s" % (path, e))
    except ImportError:
        doc = parse_simple_yaml(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("anomaly"), dict):
        raise BadFileError("%s has no 'anomaly:' section; is it the old system's config.yaml?" % path)
    return doc["anomaly"]


def _code_map(anomaly, key, path):
    block = anomaly.get(key)
    if not isinstance(block, dict) or not block:
        raise BadFileError("%s: anomaly.%s is missing or not a mapping of names to codes" % (path, key))
    codes = {}
    for name, value in block.items():
        try:
            code = int(str(value).strip())
        except ValueError:
            raise BadFileError("%s: anomaly.%s.%s is %r, expected an integer code" % (path, key, name, value))
        codes[str(name)] = code
    return {"codes": codes, "unseen": codes.get("unknown", -1)}


def old_config_encodings(anomaly, path):
    return {
        "service_encoded": _code_map(anomaly, "service_mappings", path),
        "event_encoded": _code_map(anomaly, "event_mappings", path),
    }


def old_thresholds(anomaly):
    block = anomaly.get("threshold")
    out = {}
    if isinstance(block, dict):
        for k, v in block.items():
            try:
                x = float(str(v))
            except ValueError:
                continue
            if math.isfinite(x):
                out[str(k)] = x
    return out


# --------------------------------------------------------------------------
# Output


def parse_features_arg(value):
    if value.endswith(".json") and os.path.isfile(value):
        try:
            with open(value, "r", encoding="utf-8") as f:
                names = json.load(f)
        except (OSError, ValueError) as e:
            raise UsageError("--features %s: cannot read a JSON list of names: %s" % (value, e))
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise UsageError("--features %s must hold a JSON list of strings" % value)
    else:
        names = [n.strip() for n in value.split(",")]
    if not names or any(not n for n in names):
        raise UsageError("--features has an empty name: give comma-separated names like hour,minute,msg_len")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError("--features names repeat: %s" % ", ".join(dup))
    return names


def write_atomic(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError("--out %s: directory %s does not exist" % (path, directory))
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def render(doc):
    """JSON with the document indented and each tree on one line."""
    sentinel = "@@trees-%s@@" % uuid.uuid4().hex
    trees = doc["forest"]["trees"]
    shallow = dict(doc)
    shallow["forest"] = dict(doc["forest"], trees=sentinel)
    head = json.dumps(shallow, indent=2, allow_nan=False, ensure_ascii=False)
    body = ",\n".join(
        "      " + json.dumps(t, separators=(",", ":"), allow_nan=False) for t in trees)
    return head.replace(json.dumps(sentinel), "[\n" + body + "\n    ]", 1) + "\n"


def build(args, warnings_out):
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise UsageError("--out %s: directory %s does not exist" % (args.out, out_dir))
    for opt, p in (("--model", args.model), ("--scaler", args.scaler)):
        if p is not None and not os.path.isfile(p):
            raise UsageError("%s %s: no such file" % (opt, p))
    if args.old_config is not None and not os.path.isfile(args.old_config):
        raise UsageError("--old-config %s: no such file" % args.old_config)
    names = parse_features_arg(args.features) if args.features is not None else None

    obj = load_pickle(args.model, "model")
    model, pipe_scaler = _unwrap_pipeline(obj, args.model)
    forest, meta, n_features, model_names = convert_forest(model, args.model, warnings_out)

    scaler_obj = None
    scaler_path = None
    if args.scaler is not None:
        if pipe_scaler is not None:
            raise UsageError("%s is a Pipeline that already has a StandardScaler; drop --scaler" % args.model)
        scaler_obj = load_pickle(args.scaler, "scaler")
        scaler_path = args.scaler
    elif pipe_scaler is not None:
        scaler_obj = pipe_scaler
        scaler_path = args.model
    scaler = None
    scaler_names = None
    scaler_meta = None
    if scaler_obj is not None:
        scaler, scaler_meta, scaler_names = convert_scaler(scaler_obj, scaler_path, n_features)
    else:
        warnings_out.append("no --scaler given: the model will see raw feature values")

    anomaly = load_old_config(args.old_config) if args.old_config is not None else None

    names_source = "--features"
    if names is None:
        if scaler_names and model_names and scaler_names != model_names:
            raise BadFileError(
                "the scaler and model disagree on feature names (%s vs %s): pass --features"
                % (",".join(scaler_names), ",".join(model_names)))
        names = scaler_names or model_names
        names_source = "feature_names_in_"
        if names is None and anomaly is not None and isinstance(anomaly.get("features"), list):
            names = [str(n) for n in anomaly["features"]]
            names_source = "old-config anomaly.features"
            warnings_out.append("feature order taken from %s anomaly.features; check it matches "
                                "the order the model was trained with" % args.old_config)
        if names is None:
            names = ["f%d" % i for i in range(n_features)]
            names_source = "generated"
            warnings_out.append("no feature names in the pickles: using f0..f%d (pass --features)"
                                % (n_features - 1))
    else:
        pickled = scaler_names or model_names
        if pickled is not None and pickled != names:
            if sorted(pickled) == sorted(names):
                raise UsageError(
                    "--features (%s) lists the pickles' feature names (%s) in another order: "
                    "give them in the stored (training) order" % (",".join(names), ",".join(pickled)))
            warnings_out.append("--features (%s) renames the feature names stored in the pickles (%s)"
                                % (",".join(names), ",".join(pickled)))
    if len(names) != n_features:
        raise UsageError(
            "%d feature names (from %s) but the model was fitted on %d features: give "
            "exactly %d names, in training order" % (len(names), names_source, n_features, n_features))
    if len(set(names)) != len(names):
        raise BadFileError("feature names repeat: %s" % ",".join(names))

    encodings = old_config_encodings(anomaly, args.old_config) if anomaly is not None else {}
    features = []
    for n in names:
        if n in encodings:
            enc = encodings[n]
            features.append({"name": n, "kind": "categorical", "codes": enc["codes"],
                             "unseen": enc["unseen"]})
        else:
            features.append({"name": n, "kind": "numeric"})
    for n in encodings:
        if n not in names:
            warnings_out.append("--old-config gives codes for %s, which is not a model feature" % n)

    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    training = {"source": "import-sklearn", "sklearn_model": args.model}
    if scaler_path is not None:
        training["sklearn_scaler"] = scaler_path
    training.update(meta)
    if scaler_meta is not None:
        training["scaler"] = scaler_meta
    training["feature_names_from"] = names_source
    if args.old_config is not None:
        training["old_config"] = args.old_config
        thr = old_thresholds(anomaly)
        if thr:
            training["old_thresholds"] = thr
    training["importer_version"] = IMPORTER_VERSION

    doc = {
        "format": "pf-model",
        "format_version": FORMAT_VERSION,
        "version": args.version or now.strftime("%Y%m%dT%H%M%SZ"),
        "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "features": features,
        "scaler": scaler,
        "forest": forest,
        "training": training,
    }
    return doc


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="import-sklearn.py",
        description="Convert a fitted scikit-learn IsolationForest (+ optional StandardScaler), "
                    "saved with joblib or pickle by any scikit-learn version, into a pf-model "
                    "JSON file. scikit-learn itself is not needed.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, metavar="PKL",
                        help="fitted IsolationForest (or Pipeline of StandardScaler + IsolationForest)")
    parser.add_argument("--scaler", metavar="PKL", help="fitted StandardScaler applied before the model")
    parser.add_argument("--features", metavar="NAMES",
                        help="comma-separated feature names in training order, or a .json file with a list")
    parser.add_argument("--old-config", metavar="YAML",
                        help="old system's config.yaml: its anomaly.service_mappings / event_mappings "
                             "become the codes of service_encoded / event_encoded")
    parser.add_argument("--out", required=True, metavar="JSON", help="output model file (written atomically)")
    parser.add_argument("--version", metavar="STR", help="model version (default: UTC time like 20261125T185200Z)")
    args = parser.parse_args(argv)

    if np is None:
        print("import-sklearn.py: numpy is required (pip install numpy joblib)", file=sys.stderr)
        return 2
    warns = []
    status = 0
    try:
        doc = build(args, warns)
        write_atomic(args.out, render(doc))
    except UsageError as e:
        error, status = e, 2
    except (BadFileError, OSError) as e:
        error, status = e, 1
    for w in warns:
        print("import-sklearn.py: warning: %s" % w, file=sys.stderr)
    if status:
        print("import-sklearn.py: error: %s" % error, file=sys.stderr)
        return status
    trees = doc["forest"]["trees"]
    print("import-sklearn.py: wrote %s: %d trees, %d nodes, %d features (%s), max_samples %d, "
          "offset %r, scaler %s"
          % (args.out, len(trees), sum(len(t["left"]) for t in trees), len(doc["features"]),
             ",".join(f["name"] for f in doc["features"]), doc["forest"]["max_samples"],
             doc["forest"]["offset"], "yes" if doc["scaler"] is not None else "no"),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
