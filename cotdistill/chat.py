"""Tokenizers and chat templates, for every stage (a leaf module: it imports no stage): loading a tokenizer with
its chat template in one-line errors, its identity hash, rendering a prompt, which tokens end a turn, which one
the template writes after an assistant message, and whether a model's saved generation config stops on it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cotdistill.errors import CotdistillError, first_line
from cotdistill.records import Message


def end_of_turn_ids(tok) -> set[int]:
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    for t in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        i = tok.convert_tokens_to_ids(t)
        if isinstance(i, int) and i >= 0 and i != tok.unk_token_id:
            ids.add(i)
    return ids


def assistant_end_token(tok) -> int | None:
    """The special token the chat template writes right after an assistant turn's content
    (ChatML's ``<|im_end|>``, Llama 3's ``<|eot_id|>``, ...); None when it writes none there."""
    mark = "\u2063cotdistill\u2063"
    try:
        text = tok.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": mark}],
                                       tokenize=False)
    except Exception:  # templates that refuse a closing assistant turn
        return None
    if mark not in text:
        return None
    ids = tok(text.split(mark, 1)[1], add_special_tokens=False)["input_ids"]
    return ids[0] if ids and ids[0] in set(tok.all_special_ids) | end_of_turn_ids(tok) else None


def stop_token_problem(model_dir: str | Path) -> str | None:
    """Why vLLM serving ``model_dir`` would not stop at the end of an assistant turn, or None: the chat template
    closes assistant turns with a token that is neither the tokenizer's EOS nor in generation_config.json's
    eos_token_id (vLLM stops on those), so a model trained to end turns that way runs on to max_tokens."""
    p = Path(model_dir)
    if not (p / "tokenizer_config.json").exists():
        return None
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(p)
    if not getattr(tok, "chat_template", None):
        return None
    end = assistant_end_token(tok)
    eos = set()
    if (p / "generation_config.json").exists():
        e = json.loads((p / "generation_config.json").read_text()).get("eos_token_id")
        eos = set(e) if isinstance(e, list) else {e}
    if end is None or end == tok.eos_token_id or end in eos:
        return None
    return (f"{p}: its chat template ends assistant turns with {tok.convert_ids_to_tokens(end)!r} (id {end}), but "
            f"generation_config.json stops on {sorted(i for i in eos if i is not None)} and the tokenizer's EOS is "
            f"{tok.eos_token!r}: generation would not stop at the end of the answer; add {end} to eos_token_id in "
            f"{p / 'generation_config.json'}")


def tokenizer_hash(tokenizer) -> str:
    """Identity of a tokenizer: sha256 over its (token, id) vocabulary and special tokens."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    special = sorted(str(t) for t in getattr(tokenizer, "all_special_tokens", []))
    payload = json.dumps({"vocab": vocab, "special": special}, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def looks_like_local_path(name: str) -> bool:
    """Hub ids are "name" or "org/name" (dots allowed: "Qwen/Qwen2.5-0.5B-Instruct"); anything
    rooted, relative with ./ or ~, deeper than one slash, present on disk, or "dir/name" where dir is a folder
    here (runs/student) is a path."""
    return (name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or Path(name).exists()
            or (name.count("/") == 1 and Path(name.split("/")[0]).is_dir()))


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "model*.bin", "*.gguf", "consolidated*.pth")  # not optimizer.pt


def tokenizer_problem(name: str) -> str | None:
    """Why a local path holds no tokenizer to load (a file, an empty folder, a model folder without one), or None."""
    local = Path(name).expanduser()
    if local.is_file() and local.suffix != ".gguf":
        return f"'{name}' is a file, not a model or tokenizer folder; give the folder that holds them"
    if local.is_dir() and not any(local.iterdir()):
        return f"'{name}' is an empty folder, not a model or tokenizer; give the folder that holds them"
    if local.is_dir() and not any((local / f).exists() for f in TOKENIZER_FILES):
        return (f"'{name}' has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); save the tokenizer of the model "
                f"it came from into it (tokenizer.save_pretrained('{name}'))")
    return None


def model_folder_problem(path: Path) -> str | None:
    """Why a local path cannot be a model to load (a file, no config.json, no weights), or None."""
    if path.suffix == ".gguf":
        return None  # vLLM and transformers load a single GGUF file
    if not path.is_dir():
        return "is a file, not a model folder; give the folder that holds config.json and the weights"
    if (path / "adapter_config.json").is_file() or (path / "params.json").is_file():
        return None  # a PEFT adapter (its base named inside) or a Mistral-format folder: the loaders know them
    if not (path / "config.json").is_file():
        what = "an empty folder" if not any(path.iterdir()) else "a folder without config.json"
        return f"is {what}, not a model; give the folder that holds config.json and the weights"
    if not any(any(path.glob(g)) for g in WEIGHT_FILES):
        return "has config.json but no weights (*.safetensors or *.bin); copy or download them into it"
    return None


_HUB_REACH: dict[str, str | None] = {}  # endpoint -> why it cannot be reached (None: reachable), once a process


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_problem(name: str, timeout_s: float = 3.0) -> str | None:
    """Why ``name``, not a path on this machine, cannot come from the hub now, or None: not in the hub cache and
    either offline mode is set or the hub's host does not answer a TCP connect within ``timeout_s`` (the loaders
    would retry for most of a minute and end in a connection traceback). A cached id, or a reachable hub, is
    left to the loaders."""
    import os

    from huggingface_hub import constants

    if Path(name).expanduser().exists():
        return None
    cache = Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE).expanduser()
    if (cache / f"models--{name.replace('/', '--')}").is_dir():
        return None
    here = f"'{name}' is not a folder here (from {Path.cwd()}) nor in the hub cache ({cache})"
    if _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE")):
        return (f"{here}, and HF_HUB_OFFLINE is set; give a local model folder, or download it first "
                f"(hf download {name})")
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")) or _truthy(
            os.environ.get("VLLM_USE_MODELSCOPE")):
        return None  # the loaders reach their hub another way than a direct connect: left to them
    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    why = _HUB_REACH[endpoint] if endpoint in _HUB_REACH else _probe(endpoint, timeout_s)
    if why is None:
        _HUB_REACH[endpoint] = None  # only a success is remembered: a blip does not refuse a run's later stages
    else:
        return (f"{here}, and the hub cannot be reached ({why}); give a local model folder (check the path), "
                f"or run where the hub is reachable")
    return None


def _probe(endpoint: str, timeout_s: float) -> str | None:
    """None when ``endpoint``'s host takes a TCP connection within ``timeout_s`` (name lookup included: it runs in a
    thread that is given up on), else why not."""
    import socket
    import threading
    from urllib.parse import urlsplit

    url = urlsplit(endpoint)
    result: list[str | None] = []

    def connect():
        try:
            socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                     timeout=timeout_s).close()
            result.append(None)
        except OSError as e:
            result.append(f"{url.hostname}: {e.strerror or e}")

    t = threading.Thread(target=connect, daemon=True)
    t.start()
    t.join(timeout_s + 0.5)
    return result[0] if result else f"{url.hostname}: no answer in {timeout_s:g} s"


def check_model_location(name: str, field_name: str, model: bool = False) -> None:
    """A local-looking path that does not exist, a hub id that cannot be fetched now (offline, or the hub
    unreachable, and not cached), or a local model whose weights are cut short (an interrupted download or copy)
    fails here, in one line, before vLLM or a trainer starts. ``model``: the path must be a model to load, not
    only a tokenizer (config.json and weights)."""
    path = Path(name).expanduser()
    if looks_like_local_path(name) and not path.exists():
        raise CotdistillError(
            f"{field_name}: model path '{name}' does not exist; give a local model directory or a hub id"
        )
    if not path.exists():
        problem = hub_problem(name)
        if problem:
            raise CotdistillError(f"{field_name}: {problem}")
    if model and path.exists():
        problem = model_folder_problem(path)
        if problem:
            raise CotdistillError(f"{field_name}: '{name}' {problem}")
    if path.is_dir():
        for f in sorted(path.glob("*.safetensors")):
            problem = safetensors_problem(f)
            if problem:
                raise CotdistillError(f"{field_name}: {f}: {problem}; download or copy the model again")


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file cannot be whole, from its header alone (8 bytes of header length, the JSON
    header, then the tensors the header places), or None."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than a safetensors header"
        n = int.from_bytes(head, "little")
        if 8 + n > size:
            return f"the header says {n:,} bytes of metadata but the file has {size:,} bytes in all (truncated)"
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError):
            return "the header is not valid JSON (not a safetensors file, or damaged)"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        return f"the tensors end at byte {8 + n + end:,} but the file has {size:,} bytes (truncated)"
    return None


def chat_template_text(value: str, field: str) -> str:
    """A chat_template setting: a Jinja file's path (read) or the template text itself. A value that names a
    .jinja/.j2 file, or holds no template syntax at all, is a path, and a missing one is a one-line error."""
    path = Path(value).expanduser()
    if "{" not in value and path.is_file():
        return path.read_text()
    if path.suffix in (".jinja", ".j2") or "{" not in value:
        raise CotdistillError(f"{field}: {path} not found; give a .jinja file that exists or the template text")
    return value


def load_tokenizer(name: str, field: str, chat_template: str | None = None, *, revision: str | None = None,
                   trust_remote_code: bool = False, need_pad: bool = True):
    """A tokenizer that can render chats (the ``chat_template`` setting replaces its own), in one-line errors
    naming ``field``: a missing local path, a tokenizer that does not load, no chat template, no pad token
    (training pads; generation passes ``need_pad=False``)."""
    from transformers import AutoTokenizer

    check_model_location(name, field)
    problem = tokenizer_problem(name)
    if problem:
        raise CotdistillError(f"{field}: {problem}")
    try:
        tok = AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise CotdistillError(f"{field}: cannot load tokenizer '{name}': {first_line(e)}") from None
    if chat_template:
        tok.chat_template = chat_template_text(chat_template, field.rsplit(".", 1)[0] + ".chat_template"
                                               if "." in field else "chat_template")
    if need_pad and tok.pad_token is None:
        raise CotdistillError(f"{field}: tokenizer '{name}' has no pad token; set one (e.g. tokenizer.pad_token = "
                              f"'<|endoftext|>' or a reserved token) and save it, then re-run")
    if not getattr(tok, "chat_template", None):
        raise CotdistillError(f"{field}: tokenizer '{name}' has no chat template; save one with the tokenizer, or "
                              "set chat_template to a Jinja file")
    return tok


_OPEN_TURN = "\x00cotdistill-open-user-turn\x00"


def opens_user_turn(messages: list[Message]) -> bool:
    """A conversation ending in an empty user message asks the model to write the user's message (Magpie)."""
    return bool(messages) and messages[-1].role == "user" and messages[-1].content == ""


def render_prompt_ids(tokenizer, messages: list[Message]) -> list[int]:
    """The prompt's token ids through the chat template, the assistant turn opened; a conversation ending in an
    empty user message renders as the template's opening of that user turn instead (Magpie's pre-query
    template: what comes before the user's text), so the model writes a user message."""
    if opens_user_turn(messages):
        convo = [m.model_dump() for m in messages[:-1]] + [{"role": "user", "content": _OPEN_TURN}]
        text = tokenizer.apply_chat_template(convo, add_generation_prompt=False, tokenize=False)
        if _OPEN_TURN not in text:
            raise CotdistillError("chat template: it does not render the user's message as given, so the opening "
                                  "of a user turn (magpie) cannot be cut from it; use mode few_shot or topics")
        return list(tokenizer(text[:text.index(_OPEN_TURN)], add_special_tokens=False)["input_ids"])
    enc = tokenizer.apply_chat_template(
        [m.model_dump() for m in messages], add_generation_prompt=True, tokenize=True, return_dict=True
    )
    return list(enc["input_ids"])
