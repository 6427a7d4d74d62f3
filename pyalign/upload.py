"""Upload a trained model folder to the Hugging Face hub.

The folder is checked before any request: it must contain weights (a LoRA adapter or full
weights), a ``README.md`` model card and no training checkpoints. The upload then creates the
repository if it does not exist (``create_repo(exist_ok=True)``) and commits the folder in one
``upload_folder`` call. The client sends its requests to ``HF_ENDPOINT`` when it is set.

The token comes from where ``huggingface_hub.get_token`` looks: ``HF_TOKEN``, then the token
file that ``hf auth login`` writes. It is passed to the client and never logged or shown.
"""

from __future__ import annotations

import fnmatch
import logging
from pathlib import Path

from pyalign.errors import HubUploadError, ModelNotFoundError

logger = logging.getLogger(__name__)

REPO_TYPES = ("model", "dataset", "space")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
FULL_WEIGHT_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors", "pytorch_model*.bin")
# Files and folders that training frameworks leave beside a model and that do not belong in a
# published model repository.
STRAY_PATTERNS = (
    "checkpoint-*",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state*.pth",
    "trainer_state.json",
    "training_args.bin",
    "*.ckpt",
)


def check_model_folder(folder: str | Path) -> list[Path]:
    """Check that ``folder`` can be published and return the files to upload.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: the folder is empty, has no weights or no model card, or contains training
            checkpoints; the message lists every problem.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ModelNotFoundError(f"model folder not found: {folder}")
    entries = sorted(folder.iterdir())
    if not entries:
        raise ValueError(
            f"model folder {folder} is empty; expected weights (adapter_model.safetensors and "
            "adapter_config.json, or model.safetensors and config.json) and a README.md model "
            "card, as in the model/ folder of a pyalign run"
        )

    names = {entry.name for entry in entries if entry.is_file()}
    problems = _weight_problems(names)
    if "README.md" not in names:
        problems.append("no README.md model card (pyalign train writes one into model/)")
    stray = [
        entry.name + ("/" if entry.is_dir() else "")
        for entry in entries
        if any(fnmatch.fnmatch(entry.name, pattern) for pattern in STRAY_PATTERNS)
    ]
    if stray:
        problems.append(
            f"training checkpoints that do not belong in a model repository: {', '.join(stray)}"
        )
    if problems:
        raise ValueError(f"model folder {folder} cannot be uploaded: {'; '.join(problems)}")

    if "tokenizer.json" not in names and "tokenizer_config.json" not in names:
        logger.warning("%s has no tokenizer files; users of the repository must supply one", folder)
    return [entry for entry in entries if entry.is_file()]


def _weight_problems(names: set[str]) -> list[str]:
    has_adapter_config = "adapter_config.json" in names
    has_adapter_weights = any(name in names for name in ADAPTER_WEIGHTS)
    has_full_weights = any(
        fnmatch.fnmatch(name, pattern) for name in names for pattern in FULL_WEIGHT_PATTERNS
    )
    if has_adapter_config or has_adapter_weights:
        if not has_adapter_config:
            return ["adapter weights without adapter_config.json"]
        if not has_adapter_weights:
            return ["adapter_config.json without its weights (adapter_model.safetensors)"]
        return []
    if "config.json" in names and has_full_weights:
        return []
    if "config.json" in names:
        return ["config.json without weights (model.safetensors)"]
    if has_full_weights:
        return ["weights without config.json"]
    return [
        "no weights (expected adapter_model.safetensors and adapter_config.json for a LoRA "
        "adapter, or model.safetensors and config.json for full weights)"
    ]


def upload_to_hf_hub(
    repo_id: str,
    model_path: str | Path,
    repo_type: str = "model",
    private: bool = False,
    commit_message: str | None = None,
    commit_description: str | None = None,
) -> str:
    """Check ``model_path`` and upload it to the hub repository ``repo_id``; return the commit URL.

    ``private`` applies when the repository is created; an existing repository keeps its
    visibility.

    Raises:
        ValueError: an invalid repository id or type, or a folder that fails the checks.
        FileNotFoundError: the folder does not exist.
        HubUploadError: no token was found, or the hub rejected a request or could not be
            reached.
    """
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.utils import validate_repo_id

    if repo_type not in REPO_TYPES:
        raise ValueError(
            f"invalid repo_type {repo_type!r}; expected one of {', '.join(REPO_TYPES)}"
        )
    validate_repo_id(repo_id)
    files = check_model_folder(model_path)
    token = get_token()
    if not token:
        raise HubUploadError(
            "no Hugging Face token found: set HF_TOKEN, or log in once with `hf auth login`"
        )

    folder = Path(model_path).expanduser()
    size_mb = sum(file.stat().st_size for file in files) / 1e6
    visibility = "private" if private else "public"
    logger.info(
        "uploading %d files (%.1f MB) from %s to %s repository %s (%s if created)",
        len(files),
        size_mb,
        folder,
        repo_type,
        repo_id,
        visibility,
    )
    api = HfApi(token=token)
    try:
        repo_url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type=repo_type,
            commit_message=commit_message or f"Upload {folder.name} with pyalign",
            commit_description=commit_description,
        )
    except _network_errors() as error:
        first_line = (
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        )
        raise HubUploadError(f"upload of {folder} to {repo_id} failed: {first_line}") from None
    logger.info("uploaded %s to %s: %s", folder, repo_url, commit.commit_url)
    return commit.commit_url


def _network_errors() -> tuple[type[BaseException], ...]:
    # HfHubHTTPError, raised for every error status, subclasses OSError; connection failures
    # come from the HTTP client that huggingface_hub uses (httpx2 in huggingface_hub 2.x).
    errors: list[type[BaseException]] = [OSError]
    try:
        import httpx2

        errors.append(httpx2.HTTPError)
    except ImportError:
        pass
    return tuple(errors)
