"""Test-wide settings (everything offline, quiet, deterministic) and the fixtures several modules share."""
import logging
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


@pytest.fixture(autouse=True)
def _root_log_level():
    """In-process `ptvl` calls configure the root logger (pipeline/console.setup_logging; `-v` sets DEBUG): the
    next test on the worker must not inherit that level (a download under DEBUG keeps img2dataset's output on
    the console instead of its log)."""
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


@pytest.fixture
def one_torch_thread():
    """Tiny matmuls: extra torch threads only spin against each other on a shared 2-core box."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# With pytest-xdist (`make test` runs `pytest -n 2 --dist loadfile`) the scheduler below sends each test file
# to one worker whole, so a module-scoped fixture is built once. Files that share an expensive session fixture,
# or a fixture that builds into pytest's cache folder (two workers building it at once would race), go to the
# same worker as one group. (xdist's own `loadgroup` cannot do this under pytest 9: it renames `item._nodeid`,
# which pytest 9 no longer reads, so every test was scheduled alone and the shared fixtures were built twice.)
_SHARED_FIXTURES = {
    "tiny_run": "tiny-run",  # the whole tiny DAG (tests/operator_run.py)
    "small_world": "small-world",  # pytest cache: ptvl-train-small
}
_SHARED_FILES = {  # modules that build pytest's cache folder ptvl-train-sample themselves
    "test_learning.py": "train-sample", "test_eval_real_model.py": "train-sample",
}
# Groups that take longest start first, so the run does not end with one worker alone on a long group; the
# rest follow in collection order. Seconds of one worker, measured on the 2-core machine from a clean clone
# before this session's speed-ups (2026-12-06); only their order matters, and the order still holds for the
# first two (train-sample ~380 s, tiny-run ~170 s after them), the rest now take 70-110 s each.
_MEASURED_S = {
    "train-sample": 400, "tiny-run": 220, "tests/test_pay_once_crash.py": 235, "tests/test_repeatable.py": 130,
    "tests/test_images.py": 165, "tests/test_luigid.py": 150, "tests/test_pay_once.py": 105,
    "tests/test_pipeline.py": 105, "tests/test_spark.py": 90, "tests/test_visdial_context.py": 80,
    "tests/test_sample_translators.py": 45, "tests/test_ct2_engines.py": 40, "tests/test_review_attacks.py": 33,
    "tests/test_neural_pipeline.py": 32, "tests/test_compare_tiny_engines.py": 28, "tests/test_ddp.py": 25,
}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") not in ("loadfile", "loadscope", "loadgroup"):
        return None  # xdist's own scheduler for `--dist load` and the others
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        """xdist's scope scheduler, with our groups as scopes and the longest groups queued first."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._group_of: dict[str, str] = {}  # file path -> its group, read once per file
            self._ordered = False  # the queue is sorted at the first assignment, when it is complete

        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            if path not in self._group_of:
                name = path.rsplit("/", 1)[-1]
                try:
                    text = (config.rootpath / path).read_text()
                except OSError:
                    text = ""
                shared = next((g for f, g in _SHARED_FIXTURES.items() if f in text), None)
                self._group_of[path] = shared or _SHARED_FILES.get(name) or path
            return self._group_of[path]

        def _assign_work_unit(self, node) -> None:
            if not self._ordered:
                queue = sorted(self.workqueue.items(), key=lambda kv: -_MEASURED_S.get(kv[0], 0))  # stable
                self.workqueue.clear()
                self.workqueue.update(queue)
                self._ordered = True
            super()._assign_work_unit(node)

    return GroupScheduling(config, log)

