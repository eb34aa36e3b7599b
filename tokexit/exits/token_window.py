"""Token-level exit with a window criterion: word j stops after layer i when every word within ±⌊w/2⌋ of j
(the window shrinks at sentence edges) has an uncertainty below the layer's threshold δᵢ. The window is centred,
so its width w is odd."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tokexit.exits.base import ExitPolicy, check_threshold, check_threshold_list, check_thresholds, layer_thresholds


def window_max(values: torch.Tensor, words: torch.Tensor, window: int) -> torch.Tensor:
    """(B, W) -> (B, W): max of ``values`` over real words within ±window//2 (padding never counts)."""
    half = window // 2
    if half == 0:
        return values
    x = values.masked_fill(~words, float("-inf"))[:, None, :]  # (B, 1, W)
    return F.max_pool1d(x, kernel_size=2 * half + 1, stride=1, padding=half)[:, 0, :]


def rowwise_window_max(values: torch.Tensor, words: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """(B, W) -> (B, W): :func:`window_max` with each row's own window size ``windows`` (B,)."""
    out = torch.empty_like(values)
    for w in windows.unique().tolist():
        rows = windows == w
        out[rows] = window_max(values[rows], words[rows], int(w))
    return out


class TokenWindowExit(ExitPolicy):
    """``threshold`` and ``window`` are one setting for every sentence, or (B,) tensors: one per sentence of the
    batch (:meth:`per_sentence`, what self-sampling replays)."""

    name = "token_window"
    kinds = ("token_tagger",)

    def __init__(self, threshold: float, window: int = 5, thresholds: list[float] | None = None,
                 upper_factor: float = 1.0, uncertainty: str = "entropy"):
        super().__init__(uncertainty)
        if isinstance(window, torch.Tensor):
            if bool((window < 1).any() | (window % 2 == 0).any()):
                raise ValueError(f"per-sentence windows must be odd and >= 1, not {window.tolist()}")
        elif isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"exit.window must be a whole number of words >= 1, not {window!r}")
        elif window % 2 == 0:
            raise ValueError(f"exit.window={window} is even: the window is centred on each word (±⌊w/2⌋ words, "
                             f"2·⌊w/2⌋+1 in all), so it must be odd; {window} would act as {window + 1}. "
                             f"Give exit.window={window - 1} or {window + 1}")
        self.threshold, self.window = check_threshold(threshold), window
        self.thresholds = check_threshold_list(thresholds)
        self.upper_factor = check_threshold(upper_factor, "exit.upper_factor")

    @classmethod
    def per_sentence(cls, thresholds: torch.Tensor, windows: torch.Tensor, upper_factor: float = 1.0,
                     uncertainty: str = "entropy") -> TokenWindowExit:
        """One (threshold, window) setting per sentence: ``thresholds`` and ``windows`` are (B,) tensors."""
        return cls(thresholds, windows, upper_factor=upper_factor, uncertainty=uncertainty)

    def check_depth(self, num_layers) -> None:
        check_thresholds(self.thresholds, num_layers)

    def decide(self, layer, num_layers, uncertainty, active, words) -> torch.Tensor:
        delta = layer_thresholds(self.threshold, num_layers, self.thresholds, self.upper_factor)[layer]
        if isinstance(self.window, torch.Tensor):
            below = rowwise_window_max(uncertainty, words, self.window) < delta[:, None]
        else:
            below = window_max(uncertainty, words, self.window) < delta
        return below & words

    def describe(self) -> dict:
        return {**super().describe(), "threshold": self.threshold, "window": self.window,
                "thresholds": self.thresholds, "upper_factor": self.upper_factor}
