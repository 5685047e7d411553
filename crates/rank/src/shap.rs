//! TreeSHAP explanations of forest predictions.
