"""Analyses of trained or untrained backbones (spectral analysis for SpectralKD)."""

from leapkd.analysis.spectrum import (
    SpectrumResult,
    layer_change_scores,
    layer_spectra,
    mirror_correlation,
    propose_layer_pairs,
    save_spectrum_plots,
)

__all__ = [
    "SpectrumResult",
    "layer_change_scores",
    "layer_spectra",
    "mirror_correlation",
    "propose_layer_pairs",
    "save_spectrum_plots",
]
