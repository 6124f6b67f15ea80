# Type stubs for the C++ extension kvshare._kvshare (python/src/module.cc); the package's own classes are
# typed in __init__.py.
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

MAX_KV_CACHE_FRACTION: float  # the largest kv_cache_memory fraction the engine takes

class SamplingParams:
    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    seed: Optional[int]
    stop_token_ids: List[int]
    ignore_eos: bool
    min_p: float
    presence_penalty: float
    frequency_penalty: float
    repetition_penalty: float
    logit_bias: Dict[int, float]
    min_tokens: int
    stop: List[str]
    include_stop_str_in_output: bool
    n: int
    logprobs: Optional[int]
    prompt_logprobs: Optional[int]
    def __init__(self, *, temperature: float = 1.0, top_p: float = 1.0, top_k: Optional[int] = None,
                 max_tokens: int = 16, seed: Optional[int] = None, stop_token_ids: Optional[Sequence[int]] = None,
                 ignore_eos: bool = False, min_p: float = 0.0, presence_penalty: float = 0.0,
                 frequency_penalty: float = 0.0, repetition_penalty: float = 1.0,
                 logit_bias: Optional[Dict[int, float]] = None, min_tokens: int = 0,
                 stop: Union[None, str, Sequence[str]] = None, include_stop_str_in_output: bool = False,
                 n: int = 1, logprobs: Optional[int] = None, prompt_logprobs: Optional[int] = None) -> None: ...

class _Tokenizer:
    @staticmethod
    def load(path: str) -> _Tokenizer: ...
    def encode(self, text: str, add_special: bool, parse_special: bool) -> List[int]: ...
    def decode(self, token_ids: Sequence[int], skip_special: bool) -> str: ...
    def id_to_token(self, id: int) -> str: ...
    def token_piece(self, id: int) -> bytes: ...
    def is_special(self, id: int) -> bool: ...
    def vocab_size(self) -> int: ...
    def bos_id(self) -> int: ...
    def eos_id(self) -> int: ...
    def eos_ids(self) -> List[int]: ...
    def adds_bos(self) -> bool: ...
    def has_chat_template(self) -> bool: ...
    def apply_chat_template(self, conversation: str, add_generation_prompt: bool, continue_final_message: bool,
                            chat_template: Optional[str]) -> str: ...

class _Request:
    def __init__(self, prompt: Optional[str], prompt_token_ids: Optional[Sequence[int]], params: SamplingParams,
                 cache_salt: str) -> None: ...

class _Output:
    request_id: int
    index: int
    stop_reason: Union[None, int, str]
    logprobs: Optional[List[Dict[int, float]]]
    prompt_logprobs: Optional[List[Optional[Dict[int, float]]]]
    text: str
    token_ids: List[int]
    prompt_token_ids: List[int]
    num_cached_tokens: int
    finished: bool
    finish_reason: Optional[str]
    error: Optional[Tuple[str, str]]

class _Engine:
    def __init__(self, model: str, kv_cache_bytes: int, kv_cache_fraction: float, block_size: int,
                 max_num_seqs: int, max_num_batched_tokens: int, max_model_len: int, enable_prefix_caching: bool,
                 seed: int, kv_cache_prefault: bool) -> None: ...
    def generate(self, requests: List[_Request], on_finished: Optional[Callable[[], Any]] = None) -> List[_Output]: ...
    def tokenizer(self) -> _Tokenizer: ...
    def metrics(self) -> Dict[str, Any]: ...
    def cache_prefix(self, text: Optional[str], token_ids: Optional[Sequence[int]], cache_salt: str) -> int: ...
    def release_prefix(self, handle: int) -> None: ...
    def reset_prefix_cache(self) -> int: ...
