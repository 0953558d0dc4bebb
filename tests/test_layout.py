"""The layout rules of labkit (issue 18; the plan is /work/wt/LAYOUT.md in the lead's notes).

Over every module in ``labkit/`` except the deprecation shims (old flat paths kept for one
release): no module over 600 lines; no import cycle (every import statement, function-level
ones too); no import of another module's ``_private`` names; imports point down the layers;
exactly one repeated-measurement class (``Samples``), one tensor-bytes function and one
free-port function; no block of six or more lines repeated (the same lines, or the same shape
with other names). And: every old path still provides its names, with a DeprecationWarning.
"""

from __future__ import annotations

import ast
import importlib
import io
import json
import re
import sys
import tokenize
import warnings
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "labkit"
MAX_LINES = 600
WINDOW = 6

#: Layers, bottom first: a module may import its own layer and the layers below it.
LAYERS = [
    ("machine", ("labkit.machine",)),
    ("leaf", ("labkit", "labkit.course", "labkit.solutions", "labkit.plots", "labkit.k8s",
              "labkit.deprecated")),
    ("planning", ("labkit.planning",)),
    ("inference", ("labkit.inference",)),
    ("training", ("labkit.training",)),
    ("storage", ("labkit.storage", "labkit.storage_fio", "labkit.storage_patterns",
                 "labkit.storage_torch")),
    ("distributed", ("labkit.distributed",)),
    ("serving", ("labkit.serving",)),
    ("check", ("labkit.check",)),
    ("cli", ("labkit.__main__",)),
]


# ----------------------------------------------------------------------------------- the tree
def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_shim(tree: ast.Module) -> bool:
    """A deprecation shim: its docstring starts with "Deprecated", or it only serves old names
    through :func:`labkit.deprecated.moved_getattr`, or it is a package ``__init__`` with its
    own PEP 562 ``__getattr__`` and a "Deprecated:" paragraph (``labkit/storage/__init__.py``)."""
    doc = ast.get_docstring(tree) or ""
    if doc.startswith("Deprecated"):
        return True
    if re.search(r"^Deprecated:", doc, re.M) and any(
            isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body):
        return True
    return any(isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)
               and getattr(n.value.func, "id", "") == "moved_getattr" for n in tree.body) \
        and not any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) for n in tree.body)


def load_tree(root: Path = PKG) -> dict[str, tuple[Path, ast.Module]]:
    """Every module under ``root`` (a package folder): name -> (path, AST), shims excluded."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        if any(p.startswith(".") or p == "__pycache__" for p in path.parts):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        if not is_shim(tree):
            out[module_name(path)] = (path, tree)
    return out


ALL = {module_name(p) for p in PKG.rglob("*.py")}
TREE = load_tree()


def enforce(violations: list[tuple[str, str]], rule: str) -> None:
    """Fail on any violation, listing each (module: what)."""
    found = [f"{m}: {what}" for m, what in violations]
    assert not found, f"{rule}:\n" + "\n".join(found)


def resolve(module: str, node: ast.ImportFrom | ast.Import, is_package: bool) -> list[tuple[str, list[str]]]:
    """The labkit modules an import statement reaches, each with the names taken from it."""
    out = []
    if isinstance(node, ast.Import):
        return [(a.name, []) for a in node.names if a.name.split(".")[0] == "labkit"]
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
    if base.split(".")[0] != "labkit":
        return []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append((sub, []) if sub in ALL else (base, [alias.name]))
    return out


def imports_of(name: str, path: Path, tree: ast.Module) -> list[tuple[str, list[str]]]:
    is_package = path.name == "__init__.py"
    return [edge for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
            for edge in resolve(name, node, is_package)]


def layer_of(module: str) -> int | None:
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or (prefix != "labkit" and module.startswith(prefix + ".")):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    return None if best is None else best[0]


# ------------------------------------------------------------------------------------ rules
def test_no_module_over_600_lines():
    enforce([(m, f"{len(p.read_text().splitlines())} lines") for m, (p, _) in TREE.items()
             if len(p.read_text().splitlines()) > MAX_LINES], f"modules over {MAX_LINES} lines")


def import_graph(tree=TREE) -> dict[str, set[str]]:
    graph = defaultdict(set)
    for name, (path, ast_) in tree.items():
        for target, _ in imports_of(name, path, ast_):
            if target != name and target in tree:
                graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    enforce([(cycle[0], " <-> ".join(cycle)) for cycle in find_cycles(import_graph())],
            "import cycles")


def test_no_import_of_another_modules_private_names():
    bad = []
    for name, (path, tree) in TREE.items():
        for target, names in imports_of(name, path, tree):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if target != name and private:
                bad.append((name, f"imports {', '.join(private)} from {target}"))
            if target.rsplit(".", 1)[-1].startswith("_") and target != "labkit.__main__":
                bad.append((name, f"imports the private module {target}"))
    enforce(bad, "imports of private names")


def test_imports_point_down_the_layers_and_not_to_old_paths():
    bad = []
    for name, (path, tree) in TREE.items():
        mine = layer_of(name)
        if mine is None:
            bad.append((name, "is in no layer: add it to LAYERS (and to LAYOUT in the README)"))
            continue
        for target, _ in imports_of(name, path, tree):
            if target not in TREE and target in ALL and name != "labkit.deprecated":
                bad.append((name, f"imports the deprecated path {target}"))
                continue
            theirs = layer_of(target)
            if theirs is not None and theirs > mine:
                bad.append((name, f"({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]})"))
    enforce(bad, "imports up the layers")


def definitions(predicate) -> list[tuple[str, str]]:
    return [(m, node.name) for m, (_, tree) in TREE.items() for node in ast.walk(tree)
            if predicate(node)]


def method_names(cls: ast.ClassDef) -> set[str]:
    return {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def calls(fn: ast.FunctionDef, name: str) -> bool:
    return any(isinstance(n, ast.Call) and name in ast.unparse(n.func) for n in ast.walk(fn))


def test_one_repeated_measurement_class():
    found = definitions(lambda n: isinstance(n, ast.ClassDef) and (
        {"median", "min", "max"} <= method_names(n) or {"median", "percentile"} <= method_names(n)))
    assert ("labkit.machine.timing", "Samples") in found
    enforce([(m, f"class {c} is another median/min/max type: use machine.timing.Samples")
             for m, c in found if c != "Samples"], "repeated-measurement classes")


@pytest.mark.parametrize("pattern, home, hint", [
    (r"_?(tensor|state_dict|tensors)_bytes", ("labkit.machine.dtypes", "tensor_bytes"),
     "counts tensor bytes again: call machine.dtypes.tensor_bytes"),
    (r"_?(find_)?free_port", ("labkit.machine.net", "free_port"),
     "is another free-port function: use machine.net.free_port"),
], ids=["tensor_bytes", "free_port"])
def test_one_function_per_concept(pattern, home, hint):
    """One tensor-bytes function and one free-port function; thin wrappers that call them pass."""
    found = definitions(lambda n: isinstance(n, ast.FunctionDef)
                        and re.fullmatch(pattern, n.name) and not calls(n, home[1]))
    assert home in found
    enforce([(m, f"{f} {hint}") for m, f in found if m != home[0]], f"{home[1]} functions")


# ------------------------------------------------------------------------- repeated blocks
KEEP = {"and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del",
        "elif", "else", "except", "finally", "for", "from", "global", "if", "in", "is",
        "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while", "with",
        "yield", "None", "True", "False", "self"}


def normalized_lines(source: str) -> list[tuple[int, str]]:
    """(line number, shape) of each code line: identifiers, strings and numbers replaced by
    placeholders, keywords and operators kept. Blank lines, comments, docstrings, decorators
    and import statements are left out (they say nothing about repeated logic)."""
    skip = set()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            skip.update(range(node.lineno, node.end_lineno + 1))
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                skip.update(range(body[0].lineno, body[0].end_lineno + 1))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for dec in node.decorator_list:
                skip.update(range(dec.lineno, dec.end_lineno + 1))
    shapes: dict[int, list[str]] = defaultdict(list)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        line = tok.start[0]
        if line in skip or tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE,
                                        tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            continue
        if tok.type == tokenize.NAME:
            shapes[line].append(tok.string if tok.string in KEEP else "N")
        elif tok.type == tokenize.STRING or tok.type == getattr(tokenize, "FSTRING_START", -1):
            shapes[line].append("S")
        elif tok.type == tokenize.NUMBER:
            shapes[line].append("0")
        elif tok.type == tokenize.OP:
            shapes[line].append(tok.string)
    return [(line, " ".join(parts)) for line, parts in sorted(shapes.items())
            if set(parts) - {"S", ")", "]", "}", ",", "+"}]   # not a string continuation


#: A line of fewer tokens than this is thin (``else:``, ``return x``, ``name: int``).
THIN_TOKENS = 5


def trivial(window: tuple[str, ...]) -> bool:
    """A window that is mostly thin lines (a field list, ``else:``/``continue`` scaffolding):
    more than two of its lines have fewer than :data:`THIN_TOKENS` tokens."""
    return sum(len(s.split()) < THIN_TOKENS for s in window) > 2


def repeated_blocks(modules: dict[str, tuple[Path, ast.Module]]) -> list[tuple[str, str]]:
    seen: dict[tuple[str, ...], tuple[str, int]] = {}
    found = []
    for name, (path, _) in sorted(modules.items()):
        lines = normalized_lines(path.read_text(encoding="utf-8"))
        last_hit = -WINDOW
        for i in range(len(lines) - WINDOW + 1):
            window = tuple(s for _, s in lines[i:i + WINDOW])
            if trivial(window):
                continue
            where = (name, lines[i][0])
            if window in seen and seen[window][0] != name or (
                    window in seen and lines[i][0] - seen[window][1] >= WINDOW):
                if i - last_hit >= WINDOW:
                    other = seen[window]
                    found.append((name, f"lines from {lines[i][0]} repeat {other[0]}:{other[1]}"))
                last_hit = i
            else:
                seen.setdefault(window, where)
    return found


def test_no_block_of_six_lines_is_repeated():
    enforce(repeated_blocks(TREE), f"blocks of {WINDOW}+ lines repeated in labkit/")


def test_the_repeated_block_finder_catches_a_copy_with_other_names(tmp_path):
    """Calibration: a function copied with renamed variables and other strings is caught."""
    original = '''
def total_bytes(tensors, dedupe=True):
    seen, total = set(), 0
    for t in tensors:
        if t is None:
            continue
        key = (t.data_ptr(), t.nbytes)
        if dedupe and key in seen:
            continue
        seen.add(key)
        total += t.nbytes
    return total
'''
    copy = original.replace("total_bytes", "sum_sizes").replace("tensors", "items") \
        .replace("seen", "known").replace("key", "ident").replace("total", "acc")
    (tmp_path / "a.py").write_text(original)
    (tmp_path / "b.py").write_text("import os\n\n\n" + copy)
    (tmp_path / "c.py").write_text("X = 1\n")
    modules = {p.stem: (p, ast.parse(p.read_text())) for p in tmp_path.glob("*.py")}
    found = repeated_blocks(modules)
    assert [m for m, _ in found] == ["b"]
    assert not repeated_blocks({"a": modules["a"], "c": modules["c"]})


# ------------------------------------------------------------------------- old paths
OLD_NAMES = {
    "bench": "Timing Rate timeit throughput format_seconds format_bytes fit_power_law",
    "hardware": ("cache_sizes last_level_cache_bytes LLC_MULTIPLE probe_size_mib usable_cores pick_device "
                 "machine_facts describe_machine measure_memory_bandwidth torch_threads "
                 "measure_matmul_flops tool_path python_ok"),
    "scratch": "DEFAULT_LIMIT_BYTES scratch_root check_free_space scratch_dir",
    "doctor": ("MIN_PYTHON MIN_CORES MIN_MEMORY_GIB MIN_DISK_GIB Check check_python check_torch "
               "check_cores check_memory check_disk check_tool check_kernel run_checks main"),
    "memory": ("BYTES_PER_PARAM TRAINING_RECIPES normalize_dtype bytes_per_param weight_bytes "
               "kv_cache_bytes training_breakdown training_bytes fits gpus_needed Deployment "
               "tensor_parallel_ok deployable_gpus process_memory LOADERS measure_load_memory "
               "tensor_bytes"),
    "catalog": ("ACCELERATOR_KEYS INSTANCE_KEYS metadata accelerators accelerator instances instance "
                "gpu_memory_gb NO_BF16 runs_natively"),
    "capacity": ("TP_DEGREES MEMORY_UTILIZATION Model MODELS model MemoryBreakdown memory_breakdown "
                 "device_memory_bytes device_budget_bytes Option smallest_tensor_parallel options "
                 "replicas_needed priced_instances on_demand_price Plan plan decode_roofline"),
    "queueing": ("HPA_DEFAULTS COLD_START_CITED NODE_LAUNCH_ASSUMED QueueResult poisson_arrivals "
                 "simulate_queue erlang_c_wait_probability ColdStart cold_start_new_node step_traffic "
                 "nonhomogeneous_arrivals AutoscaleResult simulate_autoscaling"),
    "decide": "PATTERNS WORKLOADS Recommendation size_band NO_BF16 supports candidates recommend",
    "decoder": ("DecoderConfig KVCache SlotCache Block Decoder rope_tables init_weights "
                "hf_llama_to_decoder_state"),
    "models": ("DTYPES MODEL_NAMES DATA_DIR SMOLLM2_WHEEL SMOLLM2_GGUF SMOLLM2_DIRNAME SMOLLM2_CONTEXT "
               "SMOLLM2_SYSTEM TINY_FILES torch_dtype cache_dir num_threads Tokenizer GenerationTimings "
               "Generation LanguageModel TextStream load_model load_tiny_gpt smollm2_gguf_path "
               "smollm2_dir prepare_smollm2 load_smollm2 load_smollm2_hf measure_gemv_bandwidth "
               "decode_benchmark bench_prompt time_hf_generate BENCH_KEYS bench_decode_cli"),
    "quant": ("quantize_int8_per_channel dequantize_int8 convert_state_dict PRECISIONS DESCRIPTIONS "
              "Int8WeightOnlyLinear Int8DynamicLinear quantize_int4_groupwise pack_int4 unpack_int4 "
              "dequantize_int4 Int4WeightOnlyLinear format_bytes_of layer_plan QuantizedLanguageModel "
              "quantize_model stored_state model_bytes heldout_text heldout_logits "
              "perplexity_from_logits top1_agreement quality activation_outliers RECOMMENDED_INT8 "
              "measure_precisions ONNX_PRECISIONS llc_bytes measure_onnx_precisions bench_quant_cli"),
    "backends": ("OnnxExport export_onnx quantize_onnx_int8 OnnxSession onnx_session max_abs_diff "
                 "decoder_to_onnx quantize_onnx_nbits copy_model matmul_weight_bytes OnnxDecoder"),
    "zoo": ("TransformerLM transformer_lm transformer_params_formula small_cnn TinyUNet tiny_unet "
            "denoise count_params"),
    "training": ("SimulatedCrash corpus_tokens random_batch measure_training_memory TrainRun train "
                 "latest_checkpoint resume"),
    "storage": ("KiB MiB GiB BLOCK_SIZES MAX_DEFAULT_BYTES DEFAULT_FILE_BYTES ALIGN SPACE_FACTOR Stats "
                "Throughput RandomReadResult Comparison default_scratch_root check_free_space scratch_dir "
                "aligned_buffer supports_direct_io drop_file_cache cached_fraction write_file make_file "
                "read_file sweep_block_sizes random_reads fio_seq_read fio_rand_read compare_seq_read "
                "compare_rand_read make_small_files read_small_files read_big_file small_vs_big "
                "machine_context storage_figures storage_option TABLE_COLUMNS storage_table "
                "storage_sources fleet_load_seconds BENCH_KEYS run_benchmark bench_storage_cli"),
    "storage_fio": ("FIO_INSTALL FIO_INSTALL_HINT FIO_PERCENTILES REQUIRE_TOOLS_ENV FioMissingError fio_path "
                    "fio_version fio_required ensure_fio fio_message FioJobResult job_file_text "
                    "parse_fio_json run_fio seq_read_job rand_read_job"),
    "storage_patterns": "LatencyServer ranged_get throttled_copy BackgroundUploader simulate_training",
    "storage_torch": ("LAYOUTS SampleSet write_samples SampleDataset steady_rate bench_dataloader "
                      "state_dict_bytes save_checkpoint load_checkpoint bench_checkpoint"),
    "distributed": ("RAY_NUM_CPUS RAY_MAX_CPUS RAY_OBJECT_STORE_BYTES SESSION_ENV OWNER_ENV OWNER_FILE "
                    "ShutdownReport default_num_cpus cleanup_dead_sessions ray_processes RaySession "
                    "shutdown_all ray_session ray_overheads object_store_rates corpus_prompts make_shards "
                    "ShardWorker InferenceRun start_shard_workers stop_actors batch_inference "
                    "serial_inference amdahl_parallel_fraction run_actor_kill run_flaky_tasks free_port "
                    "RankError run_ranks collectives_demo allreduce_benchmark tiny_config training_batches "
                    "train_single ddp_train compare_losses sharded_training_bytes parallelism_plan LAYOUTS "
                    "min_nodes efa_GBps ring_allreduce_seconds gradient_sync_seconds pipeline_bubble main"),
}

#: Names the ARC findings deleted on purpose (dead or duplicated), not kept in the shims.
REMOVED = {"storage": {"check_free_space", "scratch_dir", "default_scratch_root",
                       "cached_fraction"}}


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_old_path_keeps_its_names_and_warns(old):
    path = PKG / f"{old}.py"
    package = PKG / old / "__init__.py"
    source = path if path.exists() else package
    assert is_shim(ast.parse(source.read_text())) or old == "training", \
        f"labkit.{old} is not a deprecation shim"
    for name in [n for n in list(sys.modules) if n == f"labkit.{old}"]:
        del sys.modules[name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(f"labkit.{old}")
        missing = [n for n in OLD_NAMES[old].split() if n not in REMOVED.get(old, ())
                   and not hasattr(module, n)]
    assert not missing, f"labkit.{old} lost {missing}"
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert any(f"labkit.{old}" in m and "import" in m for m in messages), messages


def test_a_new_module_import_does_not_warn():
    for name in [n for n in list(sys.modules) if n.startswith("labkit.training")]:
        del sys.modules[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        importlib.import_module("labkit.training.loop")
        importlib.import_module("labkit.machine.timing")


#: Old paths that are packages now: ``from labkit.storage import disk`` is the new home.
PACKAGE_SHIMS = {"training", "storage", "distributed"}


#: Old paths with no shim left: importing them fails (the module moved within this change).
GONE = {"model_delivery": "labkit.storage.delivery"}


def code_of(text: str) -> str:
    """The Python in ``text``: a notebook's code cells (its JSON), or ``text`` itself."""
    if text.lstrip().startswith("{"):
        try:
            cells = json.loads(text).get("cells", [])
        except ValueError:
            return text
        return "\n".join("".join(c.get("source", "")) for c in cells
                         if c.get("cell_type") == "code")
    return text


def imported_names(names: str) -> list[str]:
    """``a, b as c`` or ``(a,\n b)`` -> ``["a", "b"]``."""
    return [n.strip().split()[0] for n in names.strip("() \n").replace("\n", " ").split(",")
            if n.strip() and not n.strip().startswith("#")]


def deprecated_imports(text: str) -> list[str]:
    """The imports in ``text`` (a notebook's JSON or a Python file) that use an old path: every
    form (``from labkit import X [as Y]``, ``from labkit.X import a, (b, ...)``,
    ``import labkit.X [as Y]``), statements inside functions too."""
    old = set(OLD_NAMES) | {"serve", "loadgen"} | set(GONE)
    found = []
    code = code_of(text)
    names = r"(\([^)]*\)|[^\n#;'\"]+)"
    start = r"(?:^|(?<=[;'\"]))\s*"     # a line, or a statement in a string (python -c '...')
    for taken in re.findall(start + r"from\s+labkit\s+import\s+" + names, code, re.M):
        found += [f"from labkit import {n}" for n in imported_names(taken) if n in old]
    for module, taken in re.findall(start + r"from\s+labkit\.(\w+)\s+import\s+" + names, code,
                                    re.M):
        if module in old - PACKAGE_SHIMS or (module in PACKAGE_SHIMS and set(
                imported_names(taken)) & set(OLD_NAMES[module].split())):
            found.append(f"from labkit.{module} import {' '.join(taken.split())}")
    for modules in re.findall(start + r"import\s+([^\n#;'\"]+)", code, re.M):
        for dotted in imported_names(modules):
            parts = dotted.split(".")
            if parts[0] == "labkit" and len(parts) == 2 and parts[1] in old:
                found.append(f"import {dotted}")
    return found


def test_the_deprecated_import_finder():
    assert deprecated_imports("from labkit import models, plots\n") == ["from labkit import models"]
    assert deprecated_imports("from labkit.training import loop\n") == []
    assert deprecated_imports("from labkit.training import train\n")
    assert deprecated_imports("from labkit.machine import timing\nimport labkit.bench\n") == \
        ["import labkit.bench"]
    # aliases, parentheses over lines, statements indented in a function, notebooks' JSON
    assert deprecated_imports("import labkit.models as m\n") == ["import labkit.models"]
    assert deprecated_imports("import os, labkit.memory as mem\n") == ["import labkit.memory"]
    assert deprecated_imports("import labkit.storage.disk as d\n") == []
    assert deprecated_imports("from labkit import storage as st\n") == \
        ["from labkit import storage"]
    assert deprecated_imports("from labkit import (plots,\n    catalog as c)\n") == \
        ["from labkit import catalog"]
    assert deprecated_imports("def f():\n    from labkit.models import (\n        load_model,\n"
                              "    )\n") == ["from labkit.models import ( load_model, )"]
    assert deprecated_imports("from labkit.storage import (disk,\n  read_file)\n")
    assert deprecated_imports("from labkit.storage import disk, fio as f\n") == []
    assert deprecated_imports("from labkit.model_delivery import read_header\n")
    assert deprecated_imports("python -c 'from labkit.models import prepare_smollm2; x()'") == \
        ["from labkit.models import prepare_smollm2"]
    notebook = json.dumps({"cells": [{"cell_type": "code", "source": ["import labkit.zoo as z\n"]},
                                     {"cell_type": "markdown", "source": ["import labkit.zoo"]}]})
    assert deprecated_imports(notebook) == ["import labkit.zoo"]


def deprecated_imports_in(*patterns: str) -> dict[str, list[str]]:
    """File (relative to the repository) -> its imports of old paths, over ``patterns``."""
    offenders = {}
    for path in [p for pattern in patterns for p in sorted(ROOT.glob(pattern))]:
        if path.name in ("test_layout.py", "test_storage_distributed_shims.py"):
            continue
        found = deprecated_imports(path.read_text(encoding="utf-8"))
        if found:
            offenders[path.relative_to(ROOT).as_posix()] = found
    return offenders


def test_no_test_or_script_imports_a_deprecated_path():
    offenders = deprecated_imports_in("tests/*.py", "scripts/*.py")
    assert not offenders, offenders


def test_no_notebook_imports_a_deprecated_path():
    offenders = deprecated_imports_in("book/*.ipynb", "labs/*.ipynb")
    assert not offenders, offenders


def test_the_api_page_documents_every_module():
    """``book/api.md`` has an ``automodule`` for every module but the entry points and the
    shims' machinery, so a maintainer finds any function's home in one click."""
    documented = set(re.findall(r"automodule:: ([\w.]+)", (ROOT / "book" / "api.md").read_text()))
    entry_points = {"labkit", "labkit.__main__", "labkit.deprecated", "labkit.distributed.__main__"}
    missing = sorted(set(TREE) - documented - entry_points)
    assert not missing, f"add to book/api.md: {missing}"
