"""Measuring a model: the profiler (params, MACs, RTF), the phone probe (phone_ctc), the utterance probe (KS/SID),
unit rates (Fig. 2), and the compression chain's measures (chain_measures)."""
