"""The `jifang` entry point as a user runs it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

GROUPS = ["server", "edge", "models", "face", "eval", "calibrate", "train", "demo"]


def test_help_lists_every_group() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jifang", "--help"], capture_output=True, text=True, check=True
    )
    for group in GROUPS:
        assert f" {group} " in result.stdout, group


BLOCK_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys

    class _NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith(("torch.", "torchvision")):
                raise ImportError(f"blocked for this test: {name}")
            return None

    sys.meta_path.insert(0, _NoTorch())
    """
)


def test_edge_runtime_imports_without_torch() -> None:
    code = BLOCK_TORCH + textwrap.dedent(
        """
        import contract, contract.messages, edge_agent, edge_agent.config, models, models.types
        import jifang.cli
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
