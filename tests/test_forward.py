"""hub/forward.run: the one forward pass of labelling, evaluation and inference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mllgraph.hub import forward


class ViewNet(nn.Module):
    """Reshapes with .view, which channels_last activations do not allow."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).view(len(x), -1))


def _convnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)
    ).eval()


@pytest.mark.parametrize("chunk", [0, 1, 4, 19, 64])
def test_chunked_channels_last_passes_equal_one_plain_pass(chunk: int) -> None:
    torch.manual_seed(0)
    model, x = _convnet(), torch.randn(19, 3, 12, 12)
    with torch.inference_mode():
        expected = model(x)
    out = forward.run(forward.to_channels_last(model), x, chunk)
    assert out.shape == (19, 5)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_a_model_that_views_falls_back_to_the_default_layout() -> None:
    torch.manual_seed(0)
    model, x = ViewNet().eval(), torch.randn(7, 3, 8, 8)
    with torch.inference_mode():
        expected = model(x)
    forward.to_channels_last(model)
    torch.testing.assert_close(forward.run(model, x, 3), expected, rtol=1e-5, atol=1e-5)
    # Remembered: later calls go straight to the default layout.
    assert model._mllgraph_contiguous
    torch.testing.assert_close(forward.run(model, x), expected, rtol=1e-5, atol=1e-5)


def test_a_real_error_still_raises() -> None:
    with pytest.raises(RuntimeError):
        forward.run(_convnet(), torch.randn(2, 5, 12, 12))  # 5 channels, the conv takes 3
