//! The face pipeline with the real models on real photos (fetched by
//! `scripts/face-assets.sh`, which the README's test command runs first): separation of
//! genuine and impostor photos, the quality gate's refusals, the presentation-attack gate
//! against the attacks we can synthesise, template refusals, and the Rust embedding
//! against onnxruntime's own Python binding.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::{Mutex, OnceLock};

use chrono::{Duration, Utc};
use edge_agent::camera::Frame;
use edge_agent::face::{Candidate, FaceDecision, FaceMatcher};
use edge_agent::vision::imageops::RgbView;
use edge_agent::vision::matching::MatchPolicy;
use edge_agent::vision::models::{Assets, ModelError, ModelFile, REFERENCE_DIGESTS, sha256_file};
use edge_agent::vision::pad::{self, Channels, PadPolicy};
use edge_agent::vision::pipeline::{AnalysisError, FacePipeline, QualityPolicy, QualityRefusal, cosine};
use edge_agent::vision::synth::{self, Placement};
use edge_agent::vision::{OnnxMatcher, decode_photo};
use lockerfleet_shared::envelope::{ExpectedParcel, ParcelStage};
use lockerfleet_shared::seal::{CabinetKeyPair, FaceTemplate, ModelRef, TemplateBinding};
use lockerfleet_shared::{CabinetId, CompartmentId, ParcelId};

fn assets() -> Assets {
    Assets::locate().unwrap_or_else(|e| panic!("{e}"))
}

/// One pipeline for the whole file: the models load once.
fn pipeline() -> std::sync::MutexGuard<'static, FacePipeline> {
    static P: OnceLock<Mutex<FacePipeline>> = OnceLock::new();
    P.get_or_init(|| Mutex::new(FacePipeline::load(&assets().models(), QualityPolicy::default()).unwrap()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn photo(name: &str) -> Frame {
    decode_photo(&std::fs::read(assets().photo("face_recognition", name)).unwrap()).unwrap()
}

fn view(f: &Frame) -> RgbView<'_> {
    RgbView::new(f.width, f.height, &f.rgb).unwrap()
}

fn embedding(name: &str) -> Vec<f32> {
    let f = photo(name);
    pipeline().analyse(view(&f)).unwrap_or_else(|e| panic!("{name}: {e}")).embedding.to_vec()
}

fn placement(f: &Frame) -> Placement {
    let a = pipeline().analyse(view(f)).unwrap();
    Placement { face: a.face, points: a.points }
}

#[test]
fn the_same_person_scores_above_the_threshold_and_another_person_far_below() {
    // One template open: the most lenient threshold the calibrated policy allows.
    let threshold = MatchPolicy::default().threshold(1);
    let obama = embedding("obama.jpg");
    for other in ["obama2.jpg", "obama3.jpg"] {
        let s = cosine(&obama, &embedding(other));
        assert!(s >= threshold, "obama.jpg vs {other}: {s} < {threshold}");
    }
    let biden = embedding("biden.jpg");
    for other in ["obama.jpg", "obama2.jpg", "obama3.jpg"] {
        let s = cosine(&biden, &embedding(other));
        assert!(s < threshold - 0.25, "biden.jpg vs {other}: {s}");
    }
    assert!((obama.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-4, "embeddings are L2-normalised");
}

#[test]
fn the_quality_gate_names_what_is_wrong() {
    let good = photo("obama.jpg");
    let refusal = |f: &Frame| match pipeline().analyse(view(f)) {
        Err(AnalysisError::Quality(q)) => q,
        other => panic!("expected a quality refusal, got {other:?}"),
    };
    // Nobody there.
    let empty = Frame { rgb: vec![90; good.rgb.len()], ..good.clone() };
    assert_eq!(refusal(&empty), QualityRefusal::NoFace);
    // The lights are off.
    let dark = Frame { rgb: good.rgb.iter().map(|v| v / 8).collect(), ..good.clone() };
    assert!(matches!(refusal(&dark), QualityRefusal::TooDark { .. } | QualityRefusal::NoFace), "{:?}", refusal(&dark));
    // Too far from the camera: the same photo at a fifth of its size.
    let small = image::imageops::resize(
        &image::RgbImage::from_raw(good.width, good.height, good.rgb.clone()).unwrap(),
        good.width / 5,
        good.height / 5,
        image::imageops::FilterType::Triangle,
    );
    let small = Frame { width: small.width(), height: small.height(), rgb: small.into_raw(), ..good.clone() };
    assert!(matches!(refusal(&small), QualityRefusal::TooSmall { .. }), "{:?}", refusal(&small));
    // Two people in view: the photo twice, side by side.
    let mut two = image::RgbImage::new(good.width * 2, good.height);
    let one = image::RgbImage::from_raw(good.width, good.height, good.rgb.clone()).unwrap();
    image::imageops::replace(&mut two, &one, 0, 0);
    image::imageops::replace(&mut two, &one, i64::from(good.width), 0);
    let two = Frame { width: two.width(), height: two.height(), rgb: two.into_raw(), ..good.clone() };
    assert_eq!(refusal(&two), QualityRefusal::SeveralFaces);
    // Each refusal says what to change.
    assert!(QualityRefusal::TooSmall { px: 30.0, min: 60.0 }.to_string().contains("too small"));
}

#[test]
fn the_attack_gate_passes_a_live_capture_and_refuses_each_synthetic_attack() {
    let original = photo("obama2.jpg");
    let at = placement(&original);
    let policy = PadPolicy::default();
    let judge = |f: &Frame| {
        // The attack frames still pass the quality gate: it is the attack gate that refuses.
        let mut p = pipeline();
        let a = p.analyse(view(f)).unwrap_or_else(|e| panic!("quality gate refused an attack frame: {e}"));
        let mut ev = pad::measure(
            &Channels { width: f.width, height: f.height, ir: f.ir.as_deref(), depth: f.depth.as_deref() },
            a.face,
            &a.points,
        );
        ev.rgb_live = Some(p.liveness(view(f), a.face).unwrap());
        pad::judge(&policy, &ev)
    };
    assert_eq!(judge(&synth::live(&original, &at)), Ok(()));
    let print = judge(&synth::print(&original, &at)).unwrap_err();
    assert!(print.contains("flat depth"), "{print}");
    let screen = judge(&synth::screen(&original, &at)).unwrap_err();
    assert!(screen.contains("flat depth") && screen.contains("no IR reflection"), "{screen}");
    let mask = judge(&synth::cutout_mask(&original, &at)).unwrap_err();
    assert!(mask.contains("no nose relief"), "{mask}");
    // A camera without depth and IR cannot pass the full gate.
    assert!(judge(&original).unwrap_err().contains("no depth channel"));
}

fn candidate(keys: &CabinetKeyPair, cabinet: &str, model: &ModelRef, template: &FaceTemplate) -> Candidate {
    let parcel = ParcelId::generate();
    let binding = TemplateBinding {
        cabinet: CabinetId::new(cabinet).unwrap(),
        parcel,
        expires_at: Utc::now() + Duration::hours(48),
        model: model.clone(),
    };
    Candidate {
        parcel: ExpectedParcel {
            parcel,
            compartment: CompartmentId::new("A1").unwrap(),
            stage: ParcelStage::Ready,
            courier: None,
            code_hash: None,
            expires_at: Utc::now() + Duration::hours(24),
        },
        template: lockerfleet_shared::seal::seal(&keys.public(), binding, template).unwrap(),
    }
}

#[test]
fn the_matcher_opens_for_the_enrolled_face_only_and_refuses_foreign_templates() {
    let a = assets();
    let models = a.models();
    let template = {
        let mut p = pipeline();
        edge_agent::vision::enrol(&mut p, &std::fs::read(a.photo("face_recognition", "obama.jpg")).unwrap()).unwrap()
    };
    let keys_a = CabinetKeyPair::generate();
    let keys_b = CabinetKeyPair::generate();
    let mut matcher = OnnxMatcher::new(
        FacePipeline::load(&models, QualityPolicy::default()).unwrap(),
        CabinetKeyPair::from_secret_bytes(&keys_a.secret_bytes()).unwrap(),
        CabinetId::new("cab-a").unwrap(),
        PadPolicy::default(),
        MatchPolicy::default(),
    )
    .unwrap();
    let probe = photo("obama2.jpg");
    let live = synth::live(&probe, &placement(&probe));
    let right = candidate(&keys_a, "cab-a", &models.embedding_ref(), &template);
    let decision = matcher.decide(std::slice::from_ref(&live), std::slice::from_ref(&right), Utc::now());
    assert!(matches!(decision, FaceDecision::Match { parcel, .. } if parcel == right.parcel.parcel), "{decision:?}");

    // The same face, but the template was made by another embedding model, or sealed for
    // another cabinet: neither is opened, so nothing matches.
    let other_model = ModelRef { id: "another-model".into(), sha256: "00".repeat(32) };
    let foreign = [
        candidate(&keys_a, "cab-a", &other_model, &template),
        candidate(&keys_b, "cab-b", &models.embedding_ref(), &template),
    ];
    let decision = matcher.decide(std::slice::from_ref(&live), &foreign, Utc::now());
    assert_eq!(decision, FaceDecision::NoMatch { reason: "no candidates".into() });

    // Someone else is no match; a print of the right face is an attack.
    let biden = photo("biden.jpg");
    let decision = matcher.decide(&[synth::live(&biden, &placement(&biden))], std::slice::from_ref(&right), Utc::now());
    assert!(matches!(&decision, FaceDecision::NoMatch { reason } if reason.contains("below")), "{decision:?}");
    let decision =
        matcher.decide(&[synth::print(&probe, &placement(&probe))], std::slice::from_ref(&right), Utc::now());
    assert!(matches!(&decision, FaceDecision::Spoof { .. }), "{decision:?}");
}

#[test]
fn the_rust_embedding_equals_onnxruntime_python_within_1e_4() {
    let a = assets();
    let f = photo("obama.jpg");
    let (input, rust) = {
        let mut p = pipeline();
        let analysis = p.analyse(view(&f)).unwrap();
        let aligned = FacePipeline::align(view(&f), &analysis.points).unwrap();
        let input = FacePipeline::embedding_input(&aligned);
        let raw = p.embed_raw(&input).unwrap();
        (input.to_vec(), raw.to_vec())
    };
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("input.f32");
    std::fs::write(&bin, input.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let script = "import sys, json, numpy as np, onnxruntime as ort\n\
                  x = np.fromfile(sys.argv[2], dtype='<f4').reshape(1, 3, 112, 112)\n\
                  s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n\
                  y = s.run(None, {s.get_inputs()[0].name: x})[0]\n\
                  print(json.dumps([float(v) for v in y.reshape(-1)]))\n";
    let out = std::process::Command::new(a.python())
        .arg("-c")
        .arg(script)
        .arg(a.root.join("models/fr_feature.onnx"))
        .arg(&bin)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let python: Vec<f32> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(python.len(), rust.len());
    let worst = rust.iter().zip(&python).map(|(r, p)| (r - p).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-4, "largest difference {worst}");
    assert!(rust.iter().any(|v| v.abs() > 0.01), "a real embedding, not zeros");
}

#[test]
fn a_model_file_that_does_not_match_its_digest_is_refused() {
    let a = assets();
    let mut models = a.models();
    models.embedding.sha256 = "ab".repeat(32);
    let err = FacePipeline::load(&models, QualityPolicy::default()).unwrap_err().to_string();
    assert!(err.contains("fr_feature.onnx") && err.contains("sha256"), "{err}");
}

/// An embedding model is checked against the contract when it loads: the detector, put
/// in its place, is refused with its input's shape named, not failed at the first face.
#[test]
fn an_embedding_model_of_another_shape_is_refused_at_load() {
    let a = assets();
    let mut models = a.models();
    models.embedding = ModelFile { path: models.detector.path.clone(), sha256: REFERENCE_DIGESTS[0].into() };
    let err = FacePipeline::load(&models, QualityPolicy::default()).unwrap_err();
    assert!(matches!(err, ModelError::Contract { role: "embedding", .. }), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("fr_detect.onnx") && err.contains("[1, 3, 240, 320]"), "{err}");
    // The reference embedding model declares its size.
    assert_eq!(pipeline().embedding_dim(), Some(512));
}

/// The MobileFaceNet-sized model that `scripts/gen-mobilefacenet.sh` writes (random
/// weights), with the figures it counted. The README's test command generates it and names
/// its folder in `LOCKERFLEET_GENERATED`, which makes it required; a plain `cargo test`
/// looks in `target/generated` and goes without it if it is not there.
fn generated_model() -> Option<(std::path::PathBuf, serde_json::Value)> {
    let required = std::env::var_os("LOCKERFLEET_GENERATED").map(std::path::PathBuf::from);
    let dir = required
        .clone()
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/generated"));
    let model = dir.join("mobilefacenet-sized.onnx");
    if !model.exists() {
        assert!(required.is_none(), "LOCKERFLEET_GENERATED is set but {} is absent", model.display());
        return None;
    }
    let stats = std::fs::read(dir.join("mobilefacenet-sized.json")).unwrap();
    Some((model, serde_json::from_slice(&stats).unwrap()))
}

/// The generated MobileFaceNet-sized model runs in the cabinet's own matcher in place of
/// the reference embedding model: its size is read from the model, every embedding has
/// that size, templates made with it open and are compared, templates of the reference
/// model are refused. (Its weights are random, so whether it matches means nothing.)
#[test]
fn a_generated_mobilefacenet_sized_model_embeds_through_the_cabinet_path() {
    let Some((path, stats)) = generated_model() else {
        eprintln!(
            "SKIPPED: target/generated/mobilefacenet-sized.onnx is absent; scripts/gen-mobilefacenet.sh writes it \
             (scripts/test.sh runs it first; LOCKERFLEET_GENERATED names another folder)"
        );
        return;
    };
    let declared = usize::try_from(stats["embedding_dim"].as_u64().unwrap()).unwrap();
    assert_ne!(declared, 512, "a size of its own, so nothing passes on the reference model's 512");
    assert_eq!(stats["sha256"].as_str().unwrap(), sha256_file(&path).unwrap(), "the figures are of this file");
    let a = assets();
    let mut models = a.models();
    models.embedding = ModelFile { path: path.clone(), sha256: sha256_file(&path).unwrap() };
    models.embedding_id = "mobilefacenet-sized".into();
    let mut p = FacePipeline::load(&models, QualityPolicy::default()).unwrap();
    assert_eq!(p.embedding_dim(), Some(declared), "the size is read from the model");

    let (obama, biden) = (photo("obama.jpg"), photo("biden.jpg"));
    let e_obama = p.analyse(view(&obama)).unwrap().embedding;
    let e_biden = p.analyse(view(&biden)).unwrap().embedding;
    for e in [&e_obama, &e_biden] {
        assert_eq!(e.len(), declared);
        assert!((e.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-4, "L2-normalised");
    }
    assert!(e_obama.iter().zip(e_biden.iter()).any(|(x, y)| (x - y).abs() > 1e-6), "the output depends on the face");

    let template =
        edge_agent::vision::enrol(&mut p, &std::fs::read(a.photo("face_recognition", "obama.jpg")).unwrap()).unwrap();
    assert_eq!(template.values().len(), declared);
    let keys = CabinetKeyPair::generate();
    let own = candidate(&keys, "cab-m", &models.embedding_ref(), &template);
    let reference = candidate(&keys, "cab-m", &a.models().embedding_ref(), &FaceTemplate::new(embedding("obama.jpg")));
    let mut matcher = OnnxMatcher::new(
        p,
        CabinetKeyPair::from_secret_bytes(&keys.secret_bytes()).unwrap(),
        CabinetId::new("cab-m").unwrap(),
        PadPolicy::default(),
        MatchPolicy::default(),
    )
    .unwrap();
    let probe = photo("obama2.jpg");
    let live = synth::live(&probe, &placement(&probe));
    // Past the quality and attack gates, the template opened and compared: a match or a
    // score below the threshold, whichever the random weights give.
    match matcher.decide(std::slice::from_ref(&live), std::slice::from_ref(&own), Utc::now()) {
        FaceDecision::Match { parcel, .. } => assert_eq!(parcel, own.parcel.parcel),
        FaceDecision::NoMatch { reason } => assert!(reason.contains("best score"), "{reason}"),
        other => panic!("the decision stopped before the match: {other:?}"),
    }
    let decision = matcher.decide(std::slice::from_ref(&live), std::slice::from_ref(&reference), Utc::now());
    assert_eq!(decision, FaceDecision::NoMatch { reason: "no candidates".into() }, "made with another model");
}

/// The agent refuses to start face pickup with a runtime that is not there, and says which.
#[test]
fn the_agent_names_a_missing_onnx_runtime_and_does_not_start() {
    let a = assets();
    let dir = tempfile::tempdir().unwrap();
    let mut models = a.models();
    models.ort_lib = dir.path().join("nowhere/libonnxruntime.so.1.31.1");
    let mut config = edge_agent::config::AgentConfig {
        cabinet: "cab-f".into(),
        data_dir: dir.path().join("data"),
        compartments: vec![edge_agent::config::CompartmentConfig {
            id: "A1".into(),
            size: lockerfleet_shared::envelope::CompartmentSize::M,
            low: false,
        }],
        ..Default::default()
    };
    config.face.enabled = true;
    config.face.models = Some(models);
    let path = dir.path().join("cabinet.toml");
    std::fs::write(&path, toml_of(&config)).unwrap();
    let agent = |arg: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_edge-agent"))
            .arg("--config")
            .arg(&path)
            .arg(arg)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    assert!(agent("provision").status.success());
    let out = agent("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ONNX Runtime could not be loaded") && stderr.contains("nowhere"), "{stderr}");
    // Enabled without models is a configuration error naming the key.
    config.face.models = None;
    std::fs::write(&path, toml_of(&config)).unwrap();
    let stderr = String::from_utf8_lossy(&agent("run").stderr).into_owned();
    assert!(stderr.contains("face.models"), "{stderr}");
}

fn toml_of(config: &edge_agent::config::AgentConfig) -> String {
    toml::to_string(config).unwrap()
}

fn edge_agent(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// `edge-agent calibrate`, given scores drawn from known normals, returns the
/// threshold the math predicts: mean + sd · z(1 − p) with p = 1 − (1 − target)^(1/N).
#[test]
fn calibration_of_known_distributions_returns_the_predicted_thresholds() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut normal = |mean: f64, sd: f64| {
        // Box–Muller.
        let (u, v): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen_range(0.0..1.0));
        mean + sd * (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    };
    let impostor: Vec<String> = (0..200_000).map(|_| normal(0.0, 0.1).to_string()).collect();
    let genuine: Vec<String> = (0..5_000).map(|_| normal(0.8, 0.05).to_string()).collect();
    let dir = tempfile::tempdir().unwrap();
    let (g, i) = (dir.path().join("genuine.txt"), dir.path().join("impostor.txt"));
    std::fs::write(&g, genuine.join("\n")).unwrap();
    std::fs::write(&i, impostor.join("\n")).unwrap();
    let out = edge_agent(&[
        "calibrate".as_ref(),
        "--genuine".as_ref(),
        g.as_os_str(),
        "--impostor".as_ref(),
        i.as_os_str(),
        "--templates".as_ref(),
        "1,50".as_ref(),
        "--json".as_ref(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // z(1 − 1e-7) = 5.19934, z(1 − 2e-9) = 5.88672.
    for (row, predicted) in [(0, 0.519_934), (1, 0.588_672)] {
        let fit = report["rows"][row]["threshold_fit"].as_f64().unwrap();
        let used = report["rows"][row]["threshold"].as_f64().unwrap();
        assert!((fit - predicted).abs() < 0.005, "row {row}: {fit} vs {predicted}");
        assert!(used >= fit && used - fit < 0.01, "the bound is a little stricter: {used} vs {fit}");
    }
    // FRR at 0.52 for genuine N(0.8, 0.05): P(Z < −5.6) ≈ 0.
    assert!(report["rows"][0]["frr"].as_f64().unwrap() < 0.001);
    // A hint of 100 classes brings 50 templates back to the threshold of one.
    let hinted = report["rows_with_hint"][1]["threshold_fit"].as_f64().unwrap();
    assert!((hinted - 0.519_934).abs() < 0.005, "{hinted}");
    // Bad input is named.
    std::fs::write(&i, "0.1\nnot-a-score\n").unwrap();
    let out =
        edge_agent(&["calibrate".as_ref(), "--genuine".as_ref(), g.as_os_str(), "--impostor".as_ref(), i.as_os_str()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("impostor.txt:2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `edge-agent enrol` turns a photo into a template sealed for one cabinet and parcel,
/// bound to the embedding model; a photo without a face is refused with the reason.
#[test]
fn enrolment_from_a_photo_seals_for_exactly_one_cabinet() {
    let a = assets();
    let keys = CabinetKeyPair::generate();
    let parcel = ParcelId::generate();
    let dir = tempfile::tempdir().unwrap();
    let notice = dir.path().join("notice.json");
    let deadline = Utc::now() + Duration::hours(24);
    std::fs::write(
        &notice,
        serde_json::json!({"parcel": parcel.0, "cabinet": "cab-a", "cabinet_public_key": keys.public().to_base64(),
                           "deadline": deadline})
        .to_string(),
    )
    .unwrap();
    let photo_path = a.photo("face_recognition", "obama.jpg");
    let out = edge_agent(&[
        "enrol".as_ref(),
        "--photo".as_ref(),
        photo_path.as_os_str(),
        "--notice".as_ref(),
        notice.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sealed: lockerfleet_shared::seal::SealedTemplate = serde_json::from_slice(&out.stdout).unwrap();
    let model = a.models().embedding_ref();
    assert_eq!(sealed.binding.model, model, "the template names the model and its sha256");
    let cabinet = CabinetId::new("cab-a").unwrap();
    let policy = lockerfleet_shared::seal::OpenPolicy { cabinet: &cabinet, model: &model, now: Utc::now() };
    let template = lockerfleet_shared::seal::open(&keys, &sealed, &policy).unwrap();
    assert!((cosine(template.values(), &embedding("obama.jpg")) - 1.0).abs() < 1e-4);
    let other = CabinetKeyPair::generate();
    assert!(lockerfleet_shared::seal::open(&other, &sealed, &policy).is_err(), "another cabinet cannot open it");

    let blank = dir.path().join("wall.png");
    image::RgbImage::from_pixel(400, 300, image::Rgb([200, 190, 180])).save(&blank).unwrap();
    let out =
        edge_agent(&["enrol".as_ref(), "--photo".as_ref(), blank.as_os_str(), "--notice".as_ref(), notice.as_os_str()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wall.png") && err.contains("no face"), "{err}");
}
