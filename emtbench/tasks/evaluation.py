"""Running lm-evaluation-harness with the EMT tasks and emtbench's lm-eval models.

Two entry points, one behaviour: :func:`run_lm_eval` is lm-eval's own command line (``emtbench eval``
passes every argument through, so all of lm-eval's options work), and :func:`evaluate` is the Python
API: ``lm_eval.simple_evaluate`` plus lm-eval's ``EvaluationTracker`` saving, so it writes the same
``results_*.json`` / ``samples_*.jsonl`` files the command writes. Both add emtbench's task folder to
the include paths the user gives, register emtbench's lm-eval models, and check ``--metadata`` before
a model loads. :func:`evaluate` also reuses one lm-eval ``TaskManager`` per set of include paths within
a process: building one indexes every task YAML lm-eval ships (~14,700 tasks, about 11 s here), which
a continual run or the demo would otherwise pay once per evaluation.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emtbench.core.errors import EmtbenchError
from emtbench.core.secrets import hide_url
from emtbench.tasks import TASKS_DIR

logger = logging.getLogger(__name__)

DEFAULT_SEED = [0, 1234, 1234, 1234]
"""lm-eval's default seeds (python, numpy, torch, few-shot)."""


def option_value(argv: list[str], *names: str) -> str | None:
    """The last value given to one of ``names`` (``--limit 5`` or ``--limit=5``)."""
    found = None
    for index, arg in enumerate(argv):
        for name in names:
            if arg == name and index + 1 < len(argv):
                found = argv[index + 1]
            elif arg.startswith(name + "="):
                found = arg.split("=", 1)[1]
    return found


def check_limit(argv: list[str]) -> None:
    """lm-eval's ``--limit``: a count ≥ 1 or a fraction in (0, 1); 0 or less crashes mid-run."""
    value = option_value(argv, "--limit", "-L")
    if value is None:
        return
    try:
        limit = float(value)
    except ValueError:
        limit = float("nan")
    if not limit > 0 or limit == float("inf") or (limit >= 1 and not limit.is_integer()):
        raise EmtbenchError(
            f"--limit must be a number of documents (1, 2, ...) or a fraction in (0, 1), got {value!r}",
            where="--limit",
            fix="e.g. --limit 100 (the first 100 documents of each task) or --limit 0.1",
        )


def run_lm_eval(argv: list[str]) -> int:
    """Run lm_eval's own CLI in this process, with the EMT task folder included.

    URL credentials in ``--metadata`` are handed to lm-eval redacted (it copies metadata into the
    results file), and any that reach a results file some other way (``--model_args``) are scrubbed
    from it after the run.
    """
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    from emtbench.models.registration import register_lm_eval_models
    from emtbench.tasks.runtime import hide_metadata_secrets

    register_lm_eval_models()

    saved_argv = sys.argv
    sys.argv = ["lm_eval", *hide_metadata_secrets(argv)]
    started = time.time()
    try:
        setup_logging()
        cli = HarnessCLI()
        parsed = cli.parse_args()
        settings = run_settings(parsed)
        if hasattr(parsed, "include_path"):
            # A --config file's include_path is kept: lm-eval lets any command-line value replace the
            # file's, and emtbench always passes one (its own task folder).
            parsed.include_path = [*settings["include_path"], str(TASKS_DIR)]
        if hasattr(parsed, "tasks"):  # `run`, not `ls` or `validate`
            warn_missing_chat_template(
                settings["model"], settings["model_args"], settings["apply_chat_template"], parsed.tasks
            )
        try:
            cli.execute(parsed)
        except ValueError as error:
            if str(error).startswith("Tasks not found"):
                missing = [t.strip() for t in str(error).split(":", 1)[1].split(",") if t.strip()]
                raise unknown_tasks_error(missing, task_manager(parsed.include_path, {})) from None
            raise
        output_path = getattr(parsed, "output_path", None)
        if output_path:
            scrub_results_files(Path(output_path), since=started)
    finally:
        sys.argv = saved_argv
    return 0


def _as_paths(value: Any) -> list[str]:
    """An include_path value (None, a path, a comma-free list of paths) as a list."""
    if not value:
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value if v]
    return [str(value)]


def run_settings(parsed: Any) -> dict[str, Any]:
    """What a parsed lm-eval command line will run with, its ``--config`` file merged in as lm-eval does
    (the command line wins), for the settings emtbench checks or extends before the run: ``model``,
    ``model_args`` (a dict), ``apply_chat_template`` and ``include_path`` (the file's paths kept too).
    """
    from lm_eval.config.evaluate_config import EvaluatorConfig
    from lm_eval.utils import simple_parse_args_string

    from_file: dict[str, Any] = {}
    config_path = getattr(parsed, "config", None)
    if config_path:
        try:
            from_file = EvaluatorConfig.load_yaml_config(config_path)
        except (FileNotFoundError, ValueError, TypeError) as error:
            raise EmtbenchError(
                str(error), where=f"--config {config_path}", fix="pass a YAML mapping"
            ) from None

    def value(name: str) -> Any:
        given = getattr(parsed, name, None)
        return given if given or given == 0 else from_file.get(name)

    model_args = value("model_args") or {}
    if isinstance(model_args, str):
        model_args = simple_parse_args_string(model_args) if not model_args.lstrip().startswith("{") else {}
    include = [*_as_paths(getattr(parsed, "include_path", None)), *_as_paths(from_file.get("include_path"))]
    return {
        "model": value("model") or "hf",
        "model_args": dict(model_args) if isinstance(model_args, dict) else {},
        "apply_chat_template": value("apply_chat_template") or False,
        "include_path": list(dict.fromkeys(include)),
    }


CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
CHAT_TEMPLATE_CONFIGS = ("processor_config.json", "tokenizer_config.json", "preprocessor_config.json")
CHAT_TEMPLATE_MODELS = ("hf-multimodal",)
"""lm-eval models that send the bare prompt unless ``--apply_chat_template`` is given."""


def has_chat_template(pretrained: str) -> bool:
    """Whether a model folder (or a Hub model already in the local cache) ships a chat template.

    Only files are read (no model, processor or network): a ``chat_template.jinja``/``.json`` or a
    ``chat_template`` entry in the processor's or tokenizer's config. A Hub id that is not cached
    reads as False: the warning this feeds is advice, never a reason to download.
    """
    folder = Path(pretrained).expanduser()

    def read(name: str) -> Path | None:
        if folder.is_dir():
            return folder / name if (folder / name).is_file() else None
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(str(pretrained), name)
        except Exception:  # not a repo id, or an unreadable cache: no advice
            return None
        return Path(found) if isinstance(found, str) else None

    if any(read(name) is not None for name in CHAT_TEMPLATE_FILES):
        return True
    for name in CHAT_TEMPLATE_CONFIGS:
        path = read(name)
        if path is None:
            continue
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if isinstance(config, dict) and config.get("chat_template"):
            return True
    return False


def rolling_loglikelihood_tasks() -> set[str]:
    """emtbench's tasks that score whole texts (perplexity): they send no prompt, so no template applies.

    Read from the task YAML as text (their ``!function`` tags are lm-eval's to resolve, not ours).
    """
    import re

    names = set()
    for path in TASKS_DIR.rglob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        if re.search(r"^output_type:\s*loglikelihood_rolling\s*$", text, re.M):
            names.update(re.findall(r"^task:\s*(\S+)\s*$", text, re.M))
    return names


def _task_names(tasks: Any) -> list[str]:
    if isinstance(tasks, str):
        return [name.strip() for name in tasks.split(",") if name.strip()]
    return [str(name) for name in tasks or []]


def chat_template_warning(
    model: str, model_args: dict[str, Any], apply_chat_template: Any, tasks: Any = None
) -> str | None:
    """The warning for an MLLM whose processor has a chat template, run without ``--apply_chat_template``
    (not for a run of perplexity tasks only: those send no prompt)."""
    pretrained = model_args.get("pretrained")
    if apply_chat_template or model not in CHAT_TEMPLATE_MODELS or not pretrained:
        return None
    names = _task_names(tasks)
    if names and set(names) <= rolling_loglikelihood_tasks():
        return None
    if not has_chat_template(str(pretrained)):
        return None
    return (
        f"{pretrained} has a chat template, but --apply_chat_template is not set: lm-eval will send the "
        "bare prompt ('<image>What is ...') instead of the conversation the model was trained on, "
        "which usually lowers accuracy; add --apply_chat_template (emtbench's examples and the "
        "leaderboard use it)"
    )


def warn_missing_chat_template(
    model: str, model_args: dict[str, Any], apply_chat_template: Any, tasks: Any = None
) -> None:
    message = chat_template_warning(model, model_args, apply_chat_template, tasks)
    if message:  # printed once (not also logged: lm-eval's log handler would show it a second time)
        print(f"emtbench eval: warning: {message}", file=sys.stderr)


def unknown_tasks_error(missing: list[str], manager: Any) -> EmtbenchError:
    """A named error for task names lm-eval does not know, with the closest names it does (difflib)."""
    import difflib

    names = list(getattr(manager, "all_tasks", []) or [])
    hints = []
    for name in missing:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        if close:
            hints.append(f"{name!r}: did you mean {', '.join(close)}?")
    fix = "; ".join(hints) + "; " if hints else ""
    return EmtbenchError(
        f"unknown task(s) {', '.join(missing)}",
        where="--tasks",
        fix=fix + "list the EMT tasks with `emtbench eval --help` and lm-eval's with "
        "`emtbench eval ls tasks`; task names are comma-separated with no spaces, and task folders "
        "of your own go in --include_path",
    )


def scrub_results_files(output_path: Path, *, since: float) -> list[Path]:
    """Redact URL credentials in the results files lm-eval wrote under ``output_path`` this run."""
    from emtbench.core.fsutil import write_text_atomically
    from emtbench.core.secrets import has_secret, redact_text

    scrubbed = []
    folder = output_path if output_path.is_dir() else output_path.parent
    for path in folder.rglob("results_*.json") if folder.is_dir() else ():
        try:
            if path.stat().st_mtime < since - 1:
                continue
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if has_secret(text):
            write_text_atomically(path, redact_text(text))
            scrubbed.append(path)
    return scrubbed


def requested_tasks(argv: list[str]) -> list[str]:
    """The ``--tasks`` of an lm-eval argument list."""
    for index, arg in enumerate(argv):
        if arg == "--tasks" and index + 1 < len(argv):
            return argv[index + 1].split(",")
        if arg.startswith("--tasks="):
            return arg.split("=", 1)[1].split(",")
    return []


def check_eval_argv(argv: list[str], tasks: list[str] | None = None) -> None:
    """What lm-eval arguments would only fail on mid-run, checked before a model loads: ``--limit``,
    malformed ``--metadata`` (strict JSON or key=value), and the ``--metadata`` keys of EMT tasks."""
    from emtbench.tasks.runtime import check_metadata_keys, cli_metadata

    check_limit(argv)
    metadata = cli_metadata(argv)
    tasks = requested_tasks(argv) if tasks is None else tasks
    if any(task.startswith("emt") for task in tasks):
        check_metadata_keys(metadata)


@dataclass
class EvaluateOptions:
    """An lm-eval run; the fields are lm-eval's ``run`` options of the same names."""

    tasks: list[str]
    model: str = "hf-multimodal"
    model_args: dict[str, Any] = field(default_factory=dict)
    output_path: Path | None = None
    batch_size: int | str = 1
    device: str | None = None
    limit: float | None = None
    num_fewshot: int | None = None
    apply_chat_template: bool = False
    gen_kwargs: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    """``--metadata``: the EMT data options and judge (see ``emtbench eval --help``)."""
    log_samples: bool = False
    include_path: list[str] = field(default_factory=list)
    """Task folders besides emtbench's own (which is always included)."""
    system_instruction: str | None = None
    seed: list[int | None] = field(default_factory=lambda: list(DEFAULT_SEED))

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str):
            self.tasks = [task for task in self.tasks.split(",") if task]
        if self.output_path is not None:
            self.output_path = Path(self.output_path)
        if isinstance(self.batch_size, str) and self.batch_size.isdigit():
            self.batch_size = int(self.batch_size)
        if not self.tasks:
            raise EmtbenchError("no tasks to evaluate", where="--tasks", fix="e.g. --tasks emt_digits")
        if self.log_samples and self.output_path is None:
            raise EmtbenchError(
                "logged samples need a folder", where="--log_samples", fix="add --output_path DIR"
            )

    def to_argv(self) -> list[str]:
        """``emtbench eval`` arguments that describe the same run."""
        argv = ["--model", self.model]
        if self.model_args:
            argv += ["--model_args", ",".join(f"{key}={value}" for key, value in self.model_args.items())]
        if self.device is not None:
            argv += ["--device", self.device]
        argv += ["--tasks", ",".join(self.tasks)]
        if self.num_fewshot is not None:
            argv += ["--num_fewshot", str(self.num_fewshot)]
        if self.limit is not None:
            argv += ["--limit", _number(self.limit)]
        argv += ["--batch_size", str(self.batch_size)]
        if self.apply_chat_template:
            argv.append("--apply_chat_template")
        if self.system_instruction is not None:
            argv += ["--system_instruction", self.system_instruction]
        if self.gen_kwargs:
            argv += ["--gen_kwargs", ",".join(f"{key}={value}" for key, value in self.gen_kwargs.items())]
        if self.metadata:
            argv += ["--metadata", json.dumps(self.metadata)]
        if self.seed != DEFAULT_SEED:
            argv += ["--seed", ",".join("None" if s is None else str(s) for s in self.seed)]
        if self.include_path:
            argv += ["--include_path", ",".join(self.include_path)]
        if self.log_samples:
            argv.append("--log_samples")
        if self.output_path is not None:
            argv += ["--output_path", str(self.output_path)]
        return argv

    @classmethod
    def from_argv(cls, argv: list[str]) -> EvaluateOptions:
        """Options from ``emtbench eval`` / ``lm_eval run`` arguments, read by lm-eval's own parser.

        Options of lm-eval that :func:`evaluate` does not carry (W&B, Hub logging, caches) are refused:
        run those through ``emtbench eval``.
        """
        from lm_eval._cli import HarnessCLI
        from lm_eval.config.evaluate_config import EvaluatorConfig

        saved_argv = sys.argv
        sys.argv = ["lm_eval", "run", *argv]
        try:
            namespace = HarnessCLI().parse_args()
        finally:
            sys.argv = saved_argv
        config = EvaluatorConfig(
            **{
                k: v
                for k, v in vars(namespace).items()
                if (v or v == 0) and k in {f.name for f in dataclasses.fields(EvaluatorConfig)}
            }
        )
        config._parse_dict_args()
        known = {f.name for f in dataclasses.fields(cls)}
        unsupported = [
            f.name
            for f in dataclasses.fields(EvaluatorConfig)
            if f.name not in known | {"config", "fewshot_as_multiturn", "trust_remote_code", "verbosity"}
            and getattr(config, f.name) != getattr(EvaluatorConfig(), f.name)
        ]
        if unsupported:
            raise EmtbenchError(
                f"evaluate() does not carry lm-eval's {', '.join(unsupported)}",
                fix="run such evaluations with `emtbench eval`",
            )
        include = config.include_path
        include = [] if not include else include if isinstance(include, list) else str(include).split(",")
        seed = config.seed if config.seed is not None else list(DEFAULT_SEED)
        seed = (
            seed
            if isinstance(seed, list)
            else [int(s) if s != "None" else None for s in str(seed).split(",")]
        )
        return cls(
            tasks=config.tasks if isinstance(config.tasks, list) else str(config.tasks).split(","),
            model=config.model,
            model_args=dict(config.model_args or {}),
            output_path=config.output_path,
            batch_size=config.batch_size,
            device=config.device,
            limit=config.limit,
            num_fewshot=config.num_fewshot,
            apply_chat_template=bool(config.apply_chat_template),
            gen_kwargs=dict(config.gen_kwargs or {}),
            metadata=dict(config.metadata or {}),
            log_samples=bool(config.log_samples),
            include_path=list(include),
            system_instruction=config.system_instruction,
            seed=list(seed),
        )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass
class EvaluateResult:
    """lm-eval's results of one run and the files it wrote."""

    results: dict[str, Any]
    """lm-eval's results dict (``results``, ``groups``, ``configs``, ``n-samples``, ...), samples removed."""
    results_file: Path | None = None
    samples_files: dict[str, Path] = field(default_factory=dict)

    def metric(self, task: str, name: str = "acc", filter_name: str = "none") -> float:
        """One metric of one task (``acc`` of ``emt_digits``)."""
        try:
            return float(self.results["results"][task][f"{name},{filter_name}"])
        except KeyError:
            raise EmtbenchError(
                f"lm-eval reported no {name!r} for {task!r}",
                fix=f"it reported: {', '.join(sorted(self.results.get('results', {}).get(task, {})))}",
            ) from None


_TASK_MANAGERS: dict[tuple[str, ...], Any] = {}


def resolved_within(index: dict[str, Any], tasks: list[str]) -> bool:
    """Whether every requested task, and every member of a requested group, is in ``index``.

    Tags (whose members are gathered across every indexed folder) and inline task configs in a
    group count as not resolved: for those only lm-eval's whole index gives the same answer.
    """
    pending, seen = list(tasks), set()
    while pending:
        name = pending.pop()
        if not isinstance(name, str):
            return False
        if name in seen:
            continue
        seen.add(name)
        entry = index.get(name)
        kind = getattr(getattr(entry, "kind", None), "name", None)
        if kind in ("TASK", "PY_TASK"):
            continue
        if kind != "GROUP":
            return False
        members = (entry.cfg or {}).get("task", [])
        pending.extend(members if isinstance(members, list) else [members])
    return True


def task_manager(include_path: list[str], metadata: dict[str, Any], tasks: list[str] | None = None):
    """lm-eval's ``TaskManager`` for these include paths, its task index built once per process.

    Indexing lm-eval's own tasks reads ~14,700 YAML files (7 s on the demo's machine). When every
    name in ``tasks`` (groups to their leaves) is found in the include paths alone, a manager over
    just those folders is used: a name there wins over lm-eval's anyway (later folders override), so
    it resolves the same. Otherwise, or without ``tasks``, the manager includes lm-eval's tasks.

    lm-eval binds the metadata to a manager when it is made and offers no way to build one from an
    existing index, so each call gets a shallow copy of the cached manager with its own metadata (the
    index is only read). If lm-eval's manager changes shape, a fresh manager is built: slower, same result.
    """
    from lm_eval.tasks import TaskManager

    cached = None
    if tasks:
        own_key = ("include paths only", *include_path)
        own = _TASK_MANAGERS.get(own_key)
        if own is None:
            own = _TASK_MANAGERS[own_key] = TaskManager(
                include_path=list(include_path), include_defaults=False
            )
        if resolved_within(getattr(own, "task_index", {}), list(tasks)):
            cached = own
    key = tuple(include_path)
    if cached is None:
        cached = _TASK_MANAGERS.get(key)
    if cached is None:
        cached = _TASK_MANAGERS[key] = TaskManager(include_path=list(include_path))
    try:
        from lm_eval.tasks._factory import TaskFactory
    except ImportError:  # pragma: no cover - another lm-eval layout
        return TaskManager(include_path=list(include_path), metadata=metadata)
    if not hasattr(cached, "_factory"):  # pragma: no cover - as above
        return TaskManager(include_path=list(include_path), metadata=metadata)
    manager = copy.copy(cached)
    manager.metadata = metadata
    manager._factory = TaskFactory(meta=metadata)
    return manager


_ENVIRONMENT_REPORT: list[str] = []


@contextmanager
def environment_reported_once() -> Iterator[None]:
    """Within it, torch's ``collect_env`` report (which lm-eval writes into every results file) is
    computed once per process.

    Making it runs about a dozen subprocesses (pip, conda, nvidia-smi, lscpu: 0.7 s on the demo's
    machine) and says the same thing every time in one process; a continual run or the demo evaluates
    dozens of times. The results files keep the whole report.
    """
    try:
        import torch.utils.collect_env as collect_env
    except ImportError:  # pragma: no cover - lm-eval then writes its own "N/A"
        yield
        return
    original = collect_env.get_pretty_env_info

    def reported_once() -> str:
        if not _ENVIRONMENT_REPORT:
            _ENVIRONMENT_REPORT.append(original())
        return _ENVIRONMENT_REPORT[0]

    collect_env.get_pretty_env_info = reported_once
    try:
        yield
    finally:
        collect_env.get_pretty_env_info = original


def evaluate(options: EvaluateOptions | None = None, /, **values: Any) -> EvaluateResult:
    """Evaluate a model on lm-eval tasks (the EMT tasks included), as ``emtbench eval`` does.

    Example::

        import emtbench
        result = emtbench.evaluate(
            tasks=["emt_digits"], model="hf-multimodal", model_args={"pretrained": "models/flagship-base"},
            apply_chat_template=True, batch_size=8, output_path="results/",
        )
        print(result.metric("emt_digits", "acc"), result.results_file)
    """
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker

    from emtbench.models.registration import register_lm_eval_models
    from emtbench.tasks.runtime import check_metadata_keys

    if options is None:
        options = EvaluateOptions(**values)
    elif values:
        raise TypeError("give an EvaluateOptions or keyword arguments, not both")
    if any(task.startswith("emt") for task in options.tasks):
        check_metadata_keys(options.metadata)  # fail before a model is loaded
    if options.limit is not None:
        check_limit(["--limit", str(options.limit)])
    register_lm_eval_models()
    # URL credentials reach the tasks (the judge reveals them in this process) but not the results file.
    hidden = {k: hide_url(v) if isinstance(v, str) else v for k, v in options.metadata.items()}
    metadata = dict(options.model_args) | hidden  # what lm-eval's CLI hands the tasks
    manager = task_manager([*options.include_path, str(TASKS_DIR)], metadata, list(options.tasks))
    missing = [task for task in options.tasks if not manager.match_tasks([task])]
    if missing:
        raise unknown_tasks_error(missing, manager)
    warn_missing_chat_template(options.model, options.model_args, options.apply_chat_template)
    tracker = EvaluationTracker(output_path=str(options.output_path) if options.output_path else None)
    seed = options.seed
    with environment_reported_once():
        results = simple_evaluate(
            model=options.model,
            model_args=dict(options.model_args),
            tasks=list(options.tasks),
            num_fewshot=options.num_fewshot,
            batch_size=options.batch_size,
            device=options.device,
            limit=options.limit,
            log_samples=options.log_samples,
            evaluation_tracker=tracker,
            system_instruction=options.system_instruction,
            apply_chat_template=options.apply_chat_template,
            fewshot_as_multiturn=bool(options.apply_chat_template),
            gen_kwargs=dict(options.gen_kwargs),
            task_manager=manager,
            random_seed=seed[0],
            numpy_random_seed=seed[1],
            torch_random_seed=seed[2],
            fewshot_random_seed=seed[3],
            metadata=metadata,
        )
    if results is None:  # not the main process of a distributed run
        return EvaluateResult({})
    samples = results.pop("samples", None) if options.log_samples else None
    results_file = None
    samples_files: dict[str, Path] = {}
    if options.output_path is not None:
        started = time.time()
        tracker.save_results_aggregated(results=results, samples=samples)
        folder = Path(options.output_path) / str(tracker.general_config_tracker.model_name_sanitized)
        results_file = folder / f"results_{tracker.date_id}.json"
        scrub_results_files(folder, since=started)
        for task_name in results["configs"] if samples else ():
            tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
            samples_files[task_name] = folder / f"samples_{task_name}_{tracker.date_id}.jsonl"
    return EvaluateResult(results, results_file, samples_files)
