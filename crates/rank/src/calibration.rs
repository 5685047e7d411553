//! Score calibration: Platt scaling and isotonic regression.
