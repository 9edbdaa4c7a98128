"""Start-up checks the commands run before any work: each raises `ConfigError` with one line that says
what is wrong and what to do, so a mistake costs nothing instead of failing hours into a run."""
from __future__ import annotations

import os
import socket
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlparse

from pipeline.fetch import read_imports
from pipeline.manifests import ManifestError, load_source
from pipeline.settings import ConfigError, Settings
from ptvl_io import temp_beside
from translation.errors import ConfigurationError


def check_writable(folder: Path, what: str = "run root") -> None:
    """Outputs could be written under `folder` (not a read-only disk, a folder without write permission or
    a file in the way).  Nothing is created: the probe file goes into the nearest folder that exists, and
    is removed at once."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{what} {folder} cannot be created: {probe} is a file, not a folder")
    try:
        fd, tmp = temp_beside(probe / ".ptvl-write-check")
        os.close(fd)
        tmp.unlink()
    except OSError as e:
        raise ConfigError(f"{what} {folder} is not writable ({probe}: {e.strerror or e})") from None


def check_features(settings: Settings) -> None:
    """What the features stage reads from the profile: [training] engine (whose shards it encodes) and
    [features] (the CLIP itself is [model]'s).  Stages before it never look at either."""
    if settings.training.engine not in settings.translate.engines:
        raise ConfigError(f"training.engine {settings.training.engine!r} is not in translate.engines "
                          f"({', '.join(settings.translate.engines)})")
    clash = {"clip", "pretrained"} & settings.features.model_fields_set
    if clash:
        raise ConfigError(f"features.{'/'.join(sorted(clash))}: the CLIP is set once, in [model] (clip, "
                          "clip_pretrained); remove it from [features]")


def check_training(settings: Settings) -> None:
    """What the train stage reads from [training]: the features stage's checks, then every training.data
    entry an enabled dataset/split."""
    check_features(settings)
    for item in settings.training.data:
        d, _, sp = item.partition("/")
        if sp not in settings.datasets.enabled().get(d, []):
            enabled = ", ".join(f"{d}/{sp}" for d, sp in settings.datasets.splits())
            raise ConfigError(f"training.data names {item!r}, which is not an enabled dataset/split "
                              f"(enabled: {enabled})")


def check_model(settings: Settings) -> None:
    """Everything the train stage reads from the profile, checked before any stage runs (not after every
    upstream stage): [training] (check_training), then the bridge name and its settings."""
    from training.bridges import BRIDGES  # deferred: the bridges import torch; most commands never need it

    check_training(settings)
    m = settings.model
    if m.bridge not in BRIDGES:
        raise ConfigError(f"unknown bridge {m.bridge!r} ([model] bridge or --bridge); known: "
                          f"{', '.join(sorted(BRIDGES))}")
    unknown = sorted(set(m.bridge_kwargs) - set(BRIDGES[m.bridge].settings))
    if unknown:
        raise ConfigError(f"bridge {m.bridge!r} has no setting(s) {', '.join(unknown)} ([model] bridge_kwargs); "
                          f"it accepts: {', '.join(BRIDGES[m.bridge].settings) or 'none'}")


def check_engines(settings: Settings, names: list[str] | None = None) -> None:
    """Every engine that will run can start (key present, model folder converted)."""
    for name in settings.translate.engines if names is None else names:
        try:
            settings.engines[name].check(name, settings.layout.sources, sample=settings.sample.enabled)
        except ConfigurationError as e:
            raise ConfigError(str(e)) from None


def check_neural_models(settings: Settings) -> None:
    """[curate] comet_model, qe_model and variety_model that name a local folder: the folder exists and (for
    COMET) holds hparams.yaml and checkpoints/model.ckpt.  Hub ids are left to load time (no network here)."""
    c = settings.curate
    for key, model in (("comet_model", c.comet_model), ("qe_model", c.qe_model), ("variety_model", c.variety_model)):
        if model is None:
            continue
        path = Path(model).expanduser()
        looks_local = path.is_absolute() or model.startswith((".", "~")) or model.count("/") != 1
        if looks_local and not path.is_dir():
            raise ConfigError(f"[curate] {key} = {model!r}: no such folder (a COMET checkpoint folder or a Hugging "
                              "Face id such as Unbabel/wmt22-cometkiwi-da)")
        if path.is_dir() and key != "variety_model" and not (path / "checkpoints" / "model.ckpt").is_file():
            raise ConfigError(f"[curate] {key} = {model!r}: not a COMET model folder (it needs hparams.yaml and "
                              "checkpoints/model.ckpt)")


def check_luigid(host: str, port: int) -> None:
    """A scheduler that cannot be reached is a one-line error before any task, not Luigi's RPC retries
    (minutes) ending in a traceback."""
    url = f"http://{host}:{port}/api/task_list?data=%7B%7D"
    try:
        urllib.request.urlopen(url, timeout=10).read()
    except OSError as e:
        raise ConfigError(f"cannot reach luigid at {host}:{port} ({getattr(e, 'reason', e)}); start it first "
                          "(README, Scale-out) or drop --scheduler-host to use a local scheduler") from None


def check_source_checkpoint(source: str) -> None:
    """`convert-model --from`: a local folder must exist and hold a config.json; a hub id must be
    reachable (or cached, offline)."""
    path = Path(source).expanduser()
    looks_local = path.is_absolute() or source.startswith((".", "~")) or source.count("/") > 1 or path.exists()
    if looks_local:
        if not path.is_dir():
            raise ConfigError(f"--from {source}: no such folder (give a local checkpoint folder or a Hugging Face id)")
        if not (path / "config.json").is_file():
            raise ConfigError(f"--from {source}: the folder has no config.json, so it is not a Hugging Face "
                              "checkpoint")
        return
    import huggingface_hub  # deferred: only convert-model asks the hub
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        cached = huggingface_hub.try_to_load_from_cache(source, "config.json")
        if not isinstance(cached, str):
            raise ConfigError(f"--from {source}: not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 forbids "
                              "downloading it (unset it, or pass a local folder)")
        return
    try:
        huggingface_hub.HfApi().model_info(source, timeout=15)
    except huggingface_hub.errors.RepositoryNotFoundError:
        raise ConfigError(f"--from {source}: no such model on the Hugging Face hub (or it is private: log in with "
                          "`hf auth login`)") from None
    except huggingface_hub.errors.GatedRepoError:
        raise ConfigError(f"--from {source}: a gated model; accept its terms on the hub and log in with "
                          "`hf auth login`") from None
    except Exception as e:  # noqa: BLE001  connection refused, DNS, timeout, proxy: all mean "unreachable"
        reason = " ".join(str(e).split())[:200]
        raise ConfigError(f"--from {source}: the Hugging Face hub cannot be reached ({type(e).__name__}: "
                          f"{reason})") from None


def _reach(host: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection to host:port opens (through the proxy the environment names, if any),
    else the reason."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return None
    except socket.gaierror as e:
        return f"name not resolved: {e.strerror or e}"
    except OSError as e:
        return e.strerror or str(e) or type(e).__name__


def check_sources_reachable(settings: Settings, timeout: float = 10.0, datasets: Iterable[str] | None = None) -> None:
    """Every enabled dataset whose official files are not all in place yet can get them: the host of each
    file still to fetch accepts a connection (a file:// URL's file exists).  Files imported by `ptvl sources
    import`, or already there at the manifest's size, need no host.  Otherwise one line per source: the
    host, the error, and the `ptvl sources import` command that uses files the user already has; so a
    machine without network stops here, before Luigi runs anything.  `datasets`: only these (default: every
    enabled one)."""
    if settings.sample.enabled:
        return
    proxies = urllib.request.getproxies()
    seen: dict[tuple[str, int], str | None] = {}
    problems = []
    for dataset in settings.datasets.enabled() if datasets is None else datasets:
        if settings.layout.source_marker(dataset).exists():
            continue
        try:
            manifest = load_source(dataset)
        except ManifestError as e:
            raise ConfigError(str(e).splitlines()[0]) from None
        dest, imported = settings.layout.source(dataset), read_imports(settings.layout.source(dataset))
        todo = [e for e in manifest.files if e.name not in imported
                and not ((dest / e.name).is_file() and (dest / e.name).stat().st_size == e.size)]
        for entry in todo:
            url = urlparse(entry.url)
            if url.scheme == "file":
                problem = None if Path(unquote(url.path)).is_file() else f"no such file {unquote(url.path)}"
                where = entry.url
            else:
                proxy = None if urllib.request.proxy_bypass(url.hostname or "") else proxies.get(url.scheme)
                target = urlparse(proxy) if proxy else url
                key = (target.hostname or "", target.port or (443 if target.scheme == "https" else 80))
                if key not in seen:
                    seen[key] = _reach(*key, timeout)
                problem, where = seen[key], f"{url.hostname}" + (f" (through the proxy {key[0]}:{key[1]})" if proxy else "")
            if problem:
                files = " ".join(f"DIR/{e.name}" for e in todo)
                problems.append(f"{dataset}: cannot reach {where} ({problem}); if you have its files: ptvl sources "
                                f"import {dataset} {files} --config {settings.config_path}")
                break
    if problems:
        raise ConfigError("\n".join(problems))
