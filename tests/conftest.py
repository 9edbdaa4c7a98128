"""Test-wide settings (everything offline, quiet, deterministic) and the fixtures several modules share."""
import os

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The tiny whole-DAG run shared by tests/test_operator.py and tests/test_browser.py.
pytest_plugins = ["tests.operator_run"]


@pytest.fixture(scope="session")
def small_world(request):
    """The small training world (40 training scenes, a tiny LM and CLIP, cached CLIP features), built once
    into pytest's cache and reused by the training, recipe and DDP tests."""
    from tests.trainfixtures import build_world

    root = request.config.cache.mkdir("ptvl-train-small")
    return build_world(root, n_train=40, n_heldout=8,
                       lm_args=dict(hidden=32, layers=2, heads=4, vocab_size=300, seq_len=48, batch=8, steps=20))


@pytest.fixture(scope="session")
def sample(tmp_path_factory):
    """One small synthetic sample (tests.helpers.small_sample) for the reader and sample tests."""
    from tests.helpers import small_sample

    return small_sample(tmp_path_factory.mktemp("sample"))


@pytest.fixture
def one_torch_thread():
    """Tiny matmuls: extra torch threads only spin against each other on a shared 2-core box."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# With pytest-xdist (`make test` runs `pytest -n 2 --dist loadgroup`), each test file goes to one worker
# whole, so a module-scoped fixture is built once; files that share an expensive session fixture, or a
# fixture that builds into pytest's cache folder (two workers building it at once would race), go to
# the same worker as one group.
_SHARED = {
    "tiny_run": "tiny-run",  # the whole tiny DAG (tests/operator_run.py)
    "small_world": "small-world",  # pytest cache: ptvl-train-small
}
_SHARED_FILES = {  # modules that build pytest's cache folder ptvl-train-sample themselves
    "test_learning.py": "train-sample", "test_eval_real_model.py": "train-sample",
}


def pytest_collection_modifyitems(config, items):
    group_of_file: dict[str, str] = {}
    for item in items:
        path = item.path.name
        shared = next((g for f, g in _SHARED.items() if f in getattr(item, "fixturenames", ())), None)
        group = shared or _SHARED_FILES.get(path)
        if group:
            group_of_file[path] = group
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group_of_file.get(item.path.name, item.path.name)))
