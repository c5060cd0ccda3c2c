//! Server-rendered pages (askama templates in `templates/`): no JavaScript, no external
//! assets. Every value is HTML-escaped by the template engine.

use askama::Template;

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage<'a> {
    pub client_name: &'a str,
    pub auth_request: &'a str,
    pub csrf: &'a str,
    pub login_hint: &'a str,
    pub error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "consent.html")]
pub struct ConsentPage<'a> {
    pub client_name: &'a str,
    pub auth_request: &'a str,
    pub csrf: &'a str,
    pub scopes: Vec<&'static str>,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
}

#[derive(Template)]
#[template(path = "logout.html")]
pub struct LogoutConfirmPage<'a> {
    pub csrf: &'a str,
    pub post_logout_redirect_uri: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub state: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    /// When set, the page shows a "sign out everywhere" button.
    pub logout_csrf: Option<&'a str>,
}

/// Renders a page; a template failure becomes a plain message rather than a panic.
pub fn render(t: &impl Template) -> String {
    t.render()
        .unwrap_or_else(|e| format!("<!doctype html><p>page unavailable ({e})</p>"))
}

pub fn error_page(title: &str, message: &str) -> String {
    render(&ErrorPage { title, message })
}

/// Words for each scope on the consent page.
pub fn describe_scope(scope: &str) -> Option<&'static str> {
    match scope {
        "openid" => Some("Sign you in with your mgpass account"),
        "profile" => Some("See your name and username"),
        "email" => Some("See your email address"),
        "offline_access" => Some("Stay signed in when you are not using it"),
        "mgpass:admin" => Some("Administer mgpass on your behalf"),
        _ => None,
    }
}
