"""A request's prompt: templated (the model's template or the request's), tokenized, and made to
fit the context — by dropping the oldest messages first, as Ollama does, then by cutting tokens."""

from __future__ import annotations

from dataclasses import dataclass

from herd.protocol.templates.check import MAX_TEMPLATE_CHARS
from herd.protocol.wire import ChatTurn, Submit
from herd.worker.templates.jinja import ChatTemplate, TemplateError
from herd.worker.templates.go import GoChatTemplate, template_from_source
from herd.worker.engine.llama import LlamaModel


_TEMPLATE_CACHE = 32


class RequestError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Prompt:
    text: str  # what the template produced (after any dropped messages)
    tokens: list[int]


class PromptBuilder:
    def __init__(self, model: LlamaModel, template: ChatTemplate, n_ctx_seq: int) -> None:
        self.model = model
        self.template = template
        self.n_ctx_seq = n_ctx_seq
        self._templates: dict[str, ChatTemplate | GoChatTemplate] = {}

    def render(self, req: Submit, messages: list[ChatTurn] | None = None) -> tuple[str, bool]:
        """The prompt as text, and whether it still needs the model's BOS token."""
        if req.raw_prompt is not None:
            return req.raw_prompt, not req.context
        template = self._template_for(req.template)
        turns = req.messages if messages is None else messages
        try:
            if req.suffix:
                if not isinstance(template, GoChatTemplate):
                    raise RequestError("this model's template does not support insert")
                text = template.render_insert(turns[-1].content if turns else "", req.suffix)
            else:
                text = template.render(turns, tools=req.tools, think=req.think)
        except TemplateError as e:
            raise RequestError(str(e)) from e
        return text, not req.context and not template.renders_bos

    def build(self, req: Submit) -> Prompt:
        text, with_bos = self.render(req)
        tokens = self._tokens(req, text, with_bos)
        limit = self.n_ctx_seq
        if len(tokens) >= limit and req.truncate and req.raw_prompt is None and not req.suffix:
            text, tokens = self._drop_oldest(req, limit, text, tokens)
        if len(tokens) >= limit:
            if not req.truncate:
                raise RequestError("the input length exceeds the context length")
            # Keep num_keep tokens from the start and the newest tail, leaving room to answer.
            keep = min(max(req.sampling.num_keep, 0), limit // 2)
            tail = max(limit * 3 // 4 - keep, 1)
            tokens = tokens[:keep] + tokens[-tail:]
        return Prompt(text, tokens)

    def _drop_oldest(self, req: Submit, limit: int, text: str,
                     tokens: list[int]) -> tuple[str, list[int]]:
        """The fewest oldest non-system messages dropped (never the last one) for the prompt to
        fit, found by bisection: the runner renders in its main loop, so a long chat must not
        cost one render per message."""
        droppable = [i for i, t in enumerate(req.messages[:-1]) if t.role != "system"]

        def without(n: int) -> tuple[str, list[int]]:
            gone = set(droppable[:n])
            turns = [t for i, t in enumerate(req.messages) if i not in gone]
            rendered, with_bos = self.render(req, turns)
            return rendered, self._tokens(req, rendered, with_bos)

        best = (text, tokens)
        low, high = 1, len(droppable)  # dropping `high` is the most that can be done
        while low <= high:
            mid = (low + high) // 2
            candidate = without(mid)
            if len(candidate[1]) < limit:
                best, high = candidate, mid - 1
            else:
                low = mid + 1
        if len(best[1]) >= limit and droppable:
            best = without(len(droppable))  # nothing fits: keep as little history as possible
        return best

    def _tokens(self, req: Submit, text: str, with_bos: bool) -> list[int]:
        # A context id outside the vocabulary fails llama_decode for the whole batch, i.e. for
        # every stream sharing the step: refuse it here, for this request alone.
        if bad := [t for t in req.context if not 0 <= t < self.model.n_vocab]:
            raise RequestError(f"invalid context: token id {bad[0]} is not in the model's "
                               f"vocabulary of {self.model.n_vocab}")
        tokens = list(req.context) + self.model.tokenize(text, add_special=False, parse_special=True)
        if with_bos and self.model.add_bos and (not tokens or tokens[0] != self.model.bos):
            tokens.insert(0, self.model.bos)
        if not tokens:
            raise RequestError("prompt is empty after templating")
        return tokens

    def _template_for(self, source: str) -> ChatTemplate | GoChatTemplate:
        if not source:
            return self.template
        template = self._templates.get(source)
        if template is None:
            if len(source) > MAX_TEMPLATE_CHARS:
                raise RequestError(f"template error: longer than {MAX_TEMPLATE_CHARS} characters")
            try:
                template = template_from_source(
                    source, bos_token=self.model.token_text(self.model.bos),
                    eos_token=self.model.token_text(self.model.eos))
            except TemplateError as e:
                raise RequestError(str(e)) from e
            if len(self._templates) >= _TEMPLATE_CACHE:
                # Requests may each bring their own template: keep the cache bounded.
                self._templates.pop(next(iter(self._templates)))
            self._templates[source] = template
        return template
