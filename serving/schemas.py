"""Request bodies of the HTTP API (pydantic), validated before any route runs (422 on a bad field)."""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, Field, field_validator


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    # None, the live model's id or anything unknown: the live model. "base": the bare base (no adapter);
    # "previous": the model before the last reload, while it is resident. The answer's `model` says which.
    model: Optional[str] = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    # None: serving's default (ServingSettings.default_temperature / default_top_p / default_repeat_penalty)
    temperature: Optional[float] = Field(None, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    repeat_penalty: Optional[float] = Field(None, gt=0.0, le=2.0)  # llama-cpp-python's server has it too
    stop: Optional[Union[str, list[str]]] = None
    seed: Optional[int] = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    # OpenAI's form: token id (as a string) -> bias in [-100, 100]
    logit_bias: Optional[dict[str, float]] = Field(None, max_length=1024)
    stream: bool = False

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, bias):
        """-> {token id: bias}."""
        for key, value in (bias or {}).items():
            if not key.isdigit():
                raise ValueError(f"logit_bias keys are token ids, got {key!r}")
            if not -100 <= value <= 100:
                raise ValueError(f"logit_bias values lie in [-100, 100], got {value}")
        return {int(k): v for k, v in bias.items()} if bias else None

    def text_problem(self) -> Optional[tuple[str, str]]:
        """(param, message) for text that cannot be encoded as UTF-8 (a lone surrogate such as "\\ud800",
        which JSON allows and the tokenizer cannot take); None when all text is fine."""
        texts = [(f"messages[{i}].content", m.content) for i, m in enumerate(self.messages)]
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        texts += [(f"stop[{i}]", s) for i, s in enumerate(stops)]
        for param, text in texts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                bad = text[e.start]
                return param, (f"{param} is not valid Unicode text: lone surrogate U+{ord(bad):04X} at character "
                               f"{e.start}")
        return None


class ReloadRequest(BaseModel):
    model_path: str = Field(description="A full GGUF (swaps the base) or a LoRA adapter GGUF "
                            "(general.type = adapter), or a folder holding one.")
    base_path: Optional[str] = Field(None, description="With an adapter: the base GGUF to load first, when it is "
                                     "not the loaded base.")
    backup: bool = True
