use cascade_ann::{Error, ErrorKind, FORMAT_VERSION, Filter, Hnsw, Metric, Params};

use crate::gaussian;

const DIM: usize = 20;

fn sample(metric: Metric) -> Hnsw {
    let data = gaussian(11, 700, DIM);
    let ids: Vec<u32> = (0..700).map(|i| i * 7 + 1).collect();
    let mut index = Hnsw::new(DIM, &Params::new(metric).ef_construction(64).seed(3)).unwrap();
    index.insert_many(&ids, &data).unwrap();
    index
}

fn results(index: &Hnsw) -> Vec<Vec<(u32, f32)>> {
    gaussian(12, 25, DIM).chunks_exact(DIM).map(|q| index.search(q, 10, 50, &Filter::new())).collect()
}

#[test]
fn round_trip_gives_identical_results_for_every_metric() {
    let dir = tempfile::tempdir().unwrap();
    for metric in [Metric::InnerProduct, Metric::Cosine, Metric::L2] {
        let index = sample(metric);
        let path = dir.path().join("index.hnsw");
        index.save(&path).unwrap();
        let mut loaded = Hnsw::load(&path).unwrap();
        assert_eq!(loaded.params(), index.params());
        assert_eq!((loaded.len(), loaded.dim(), loaded.metric()), (700, DIM, metric));
        assert_eq!(results(&loaded), results(&index));
        assert_eq!(loaded.vector(8), index.vector(8));
        // a loaded index keeps growing
        loaded.insert(5, &[0.5; DIM]).unwrap();
        assert!(loaded.contains(5));
        let err = loaded.insert(8, &[0.5; DIM]).unwrap_err();
        assert!(matches!(err, Error::DuplicateId(8)), "{err}");
        assert_eq!(err.kind(), ErrorKind::Conflict);
        let err = loaded.insert(9999, &[0.5; DIM - 1]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    }
    let empty = Hnsw::new(3, &Params::default()).unwrap();
    let path = dir.path().join("empty.hnsw");
    empty.save(&path).unwrap();
    assert!(Hnsw::load(&path).unwrap().is_empty());
}

#[test]
fn sections_are_64_byte_aligned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i.hnsw");
    sample(Metric::L2).save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"CSCDHNSW");
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), FORMAT_VERSION);
    let mut end = 256;
    for i in 0..6 {
        let at = 128 + 16 * i;
        let offset = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let len = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap());
        assert_eq!(offset % 64, 0, "section {i}");
        assert!(offset >= end);
        end = offset + len;
    }
    assert_eq!(end, bytes.len() as u64);
}

fn load_err(bytes: &[u8]) -> Error {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.hnsw");
    std::fs::write(&path, bytes).unwrap();
    Hnsw::load(&path).unwrap_err()
}

/// Rewrites the header checksum after editing the header.
fn fix_header_crc(bytes: &mut [u8]) {
    let crc = crc32c::crc32c(&bytes[..252]);
    bytes[252..256].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn damaged_files_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i.hnsw");
    sample(Metric::InnerProduct).save(&path).unwrap();
    let good = std::fs::read(&path).unwrap();

    let corrupt = |bytes: &[u8], expect: &str| {
        let err = load_err(bytes);
        assert_eq!(err.kind(), ErrorKind::Internal);
        let msg = err.to_string();
        assert!(matches!(err, Error::Corrupt { .. }), "{msg}");
        assert!(msg.contains(expect), "{msg:?} should mention {expect:?}");
    };
    // truncated anywhere
    for cut in [0, 100, 255, 256, good.len() / 2, good.len() - 1] {
        let expect = if cut < 256 { "shorter than" } else { "truncated" };
        corrupt(&good[..cut], expect);
    }
    // one flipped bit in the body, in the header, in the magic
    let mut b = good.clone();
    let mid = good.len() / 2;
    b[mid] ^= 0x10;
    corrupt(&b, "body checksum");
    let mut b = good.clone();
    b[20] ^= 1;
    corrupt(&b, "header checksum");
    let mut b = good.clone();
    b[0] = b'X';
    corrupt(&b, "magic");
    // extended
    let mut b = good.clone();
    b.extend_from_slice(&[0; 64]);
    corrupt(&b, "extended");

    // a future version is refused as such, not misread
    let mut b = good.clone();
    b[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    fix_header_crc(&mut b);
    let err = load_err(&b);
    assert!(matches!(err, Error::UnsupportedVersion { found, .. } if found == FORMAT_VERSION + 1), "{err}");

    // a neighbour id out of range with valid checksums is still refused
    let mut b = good;
    let at = |i: usize| u64::from_le_bytes(b[128 + 16 * i..136 + 16 * i].try_into().unwrap()) as usize;
    let layer0 = at(3);
    b[layer0 + 4..layer0 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    let crc = crc32c::crc32c(&b[256..]);
    b[72..76].copy_from_slice(&crc.to_le_bytes());
    fix_header_crc(&mut b);
    corrupt(&b, "neighbour list");

    // missing file
    let err = Hnsw::load(dir.path().join("missing.hnsw")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("missing.hnsw"));
}
