"""Token-level exit with a window criterion: word j stops after layer i when every word within ±⌊w/2⌋ of j
(the window shrinks at sentence edges) has an uncertainty below the layer's threshold δᵢ. The window is centred,
so its width w is odd."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tokexit.exits.base import ExitPolicy, check_thresholds, layer_thresholds


def window_max(values: torch.Tensor, words: torch.Tensor, window: int) -> torch.Tensor:
    """(B, W) -> (B, W): max of ``values`` over real words within ±window//2 (padding never counts)."""
    half = window // 2
    if half == 0:
        return values
    x = values.masked_fill(~words, float("-inf"))[:, None, :]  # (B, 1, W)
    return F.max_pool1d(x, kernel_size=2 * half + 1, stride=1, padding=half)[:, 0, :]


class TokenWindowExit(ExitPolicy):
    name = "token_window"

    def __init__(self, threshold: float, window: int = 5, thresholds: list[float] | None = None,
                 upper_factor: float = 1.0, uncertainty: str = "entropy"):
        super().__init__(uncertainty)
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"exit.window must be a whole number of words >= 1, not {window!r}")
        if window % 2 == 0:
            raise ValueError(f"exit.window={window} is even: the window is centred on each word (±⌊w/2⌋ words, "
                             f"2·⌊w/2⌋+1 in all), so it must be odd; {window} would act as {window + 1}. "
                             f"Give exit.window={window - 1} or {window + 1}")
        self.threshold, self.window, self.thresholds, self.upper_factor = threshold, window, thresholds, upper_factor

    def check_depth(self, num_layers) -> None:
        check_thresholds(self.thresholds, num_layers)

    def decide(self, layer, num_layers, uncertainty, active, words) -> torch.Tensor:
        delta = layer_thresholds(self.threshold, num_layers, self.thresholds, self.upper_factor)[layer]
        return (window_max(uncertainty, words, self.window) < delta) & words

    def describe(self) -> dict:
        return {**super().describe(), "threshold": self.threshold, "window": self.window,
                "thresholds": self.thresholds, "upper_factor": self.upper_factor}
