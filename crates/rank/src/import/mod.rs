//! Importers for models trained elsewhere: LightGBM text models and XGBoost JSON models.
