//! Spin component: the group-chat demo page (plain HTML, CSS and JS in
//! `page/`, no build step) and the two demo endpoints it signs in and pays
//! with. Everything here answers 404 unless the `demo_mode` variable is true.
//!
//! The files are embedded rather than served by Spin's fileserver component,
//! which is a prebuilt download a machine without internet cannot fetch.

use hongbao_spin::File;

pub const FILES: &[File] = &[
    File { path: "index.html", content_type: "text/html; charset=utf-8", body: include_bytes!("../page/index.html") },
    File { path: "app.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("../page/app.js") },
    File { path: "style.css", content_type: "text/css; charset=utf-8", body: include_bytes!("../page/style.css") },
];

hongbao_spin::component!(DemoSignIn, DemoPayment; files = FILES);
