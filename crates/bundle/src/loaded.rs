//! A trained bundle loaded for serving: its models, id maps and ANN index, and the candidate
//! generator built from them.

use crate::SourceKind;
use crate::artifacts::{self, ALS_INDEX, RANKERS, RANKING};
use crate::candidates::{Fill, Generator, SourceSpec, audience_of};
use crate::error::{Error, Result};
use crate::rankers::Rankers;
use crate::sources::{AnnSource, PrecomputedSource, RetrieverSource};
use cascade_ann::Hnsw;
use cascade_core::IdMap;
use cascade_models::AnyModel;
use cascade_registry::Bundle;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug)]
pub struct LoadedBundle {
    pub version: u64,
    pub users: IdMap,
    pub items: IdMap,
    pub models: BTreeMap<String, Arc<AnyModel>>,
    pub als_index: Option<Arc<Hnsw>>,
    /// The cascade's rankers, when the bundle was trained with them.
    pub rankers: Option<Arc<Rankers>>,
}

fn id_map(bundle: &Bundle, name: &str) -> Result<IdMap> {
    let path = bundle.artifact(name)?;
    let bytes = std::fs::read(&path).map_err(|e| Error::artifact(name, e))?;
    let ids: Vec<String> = serde_json::from_slice(&bytes).map_err(|e| Error::artifact(name, e))?;
    let mut map = IdMap::new();
    for id in &ids {
        map.get_or_insert(id);
    }
    if map.len() != ids.len() {
        return Err(Error::artifact(name, "duplicate ids"));
    }
    Ok(map)
}

impl LoadedBundle {
    pub fn load(bundle: &Bundle) -> Result<LoadedBundle> {
        let mut models = BTreeMap::new();
        for entry in &bundle.manifest.draft.models {
            for artifact in entry.artifacts.iter().filter(|a| a.ends_with(artifacts::MODEL_SUFFIX)) {
                let model = AnyModel::load_file(&bundle.artifact(artifact)?)?;
                models.insert(entry.name.clone(), Arc::new(model));
            }
        }
        let has_index = bundle.manifest.artifacts.iter().any(|a| a.name == ALS_INDEX);
        let als_index = if has_index { Some(Arc::new(Hnsw::load(bundle.artifact(ALS_INDEX)?)?)) } else { None };
        let rankers = if bundle.manifest.artifacts.iter().any(|a| a.name == RANKING) {
            for name in RANKERS {
                bundle.artifact(name)?;
            }
            Some(Arc::new(Rankers::load(|name| bundle.dir.join(name))?))
        } else {
            None
        };
        Ok(LoadedBundle {
            version: bundle.manifest.version,
            users: id_map(bundle, artifacts::USERS)?,
            items: id_map(bundle, artifacts::ITEMS)?,
            models,
            als_index,
            rankers,
        })
    }

    /// The serving generator over `quotas` (source name → candidates it may contribute), in
    /// the map's order, for the sources the bundle has: the collaborative ones (`als` through
    /// the ANN index, `itemknn`, `bpr`) for users with history; popularity, trending and
    /// content-based for everyone, as the rankers saw them in training.
    /// Sources named in `precomputed` serve users from the lists their requests carry, when
    /// they carry one.
    pub fn generator_with(&self, quotas: &BTreeMap<String, usize>, precomputed: &[String]) -> Generator {
        let mut sources = Vec::new();
        for (name, &quota) in quotas {
            if name == SourceKind::Als.name() {
                if let (Some(als), Some(index)) = (self.models.get(name), &self.als_index)
                    && let Some(source) = AnnSource::new(name.as_str(), als.clone(), index.clone())
                {
                    sources.push(SourceSpec::warm(Box::new(source), quota));
                }
                continue;
            }
            let Some(model) = self.models.get(name) else { continue };
            let retriever = Box::new(RetrieverSource::new(name.as_str(), model.clone()));
            let source: Box<dyn crate::CandidateSource> =
                if precomputed.contains(name) { Box::new(PrecomputedSource::new(retriever)) } else { retriever };
            sources.push(SourceSpec { source, quota, audience: audience_of(name) });
        }
        Generator::new(sources)
    }

    /// The generator `cascade candidates` shows: serving's ([`LoadedBundle::generator_with`])
    /// over every source kind, with `per_source` as each quota, interleaved so that a short list
    /// shows every source.
    pub fn generator(&self, per_source: usize) -> Generator {
        let quotas = crate::default_quotas().into_keys().map(|name| (name, per_source)).collect();
        let mut generator = self.generator_with(&quotas, &[]);
        generator.fill = Fill::Interleaved;
        generator
    }
}
