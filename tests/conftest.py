from pathlib import Path
import pytest, torch

FIXTURES = Path(__file__).parent / 'fixtures'

@pytest.fixture(scope='session')
def golden():
    """The reference DiT's numbers (a copy of shared/reference/dit_golden.pt)."""
    return torch.load(FIXTURES / 'dit_golden.pt', weights_only=True)

ROOT = Path(__file__).resolve().parents[1]
RUN = "import sys; from dit_edu.train import main; sys.exit(main(sys.argv[1:]))"   # dit-train as a child process


def child_env():
    """Environment for a child process: this checkout's dit_edu first, one thread (two children share two cores)."""
    import os
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''), OMP_NUM_THREADS='1')
