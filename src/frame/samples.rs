//! Sample frames compiled into the binary, so `veriframe run` works on built-in defaults from any
//! directory. Provenance: `samples/PROVENANCE.md` (public domain / CC0 images from scikit-image).

/// (file name, JPEG bytes)
pub const SAMPLES: &[(&str, &[u8])] = &[
    (
        "astronaut_00.jpg",
        include_bytes!("../../samples/astronaut_00.jpg"),
    ),
    (
        "astronaut_01.jpg",
        include_bytes!("../../samples/astronaut_01.jpg"),
    ),
    (
        "astronaut_02.jpg",
        include_bytes!("../../samples/astronaut_02.jpg"),
    ),
    (
        "astronaut_03.jpg",
        include_bytes!("../../samples/astronaut_03.jpg"),
    ),
    (
        "astronaut_04.jpg",
        include_bytes!("../../samples/astronaut_04.jpg"),
    ),
    (
        "coffee_noface.jpg",
        include_bytes!("../../samples/coffee_noface.jpg"),
    ),
];
