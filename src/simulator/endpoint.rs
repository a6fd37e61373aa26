//! The WeChat endpoints the simulator serves: one name for routing, counters, quota and faults.

use axum::routing::MethodFilter;

/// A WeChat API the simulator implements.
///
/// Counters, quotas and faults are keyed by this rather than by path strings, so a typo in
/// a fault request is rejected instead of silently never matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// `GET /cgi-bin/token`: Official Account / Mini Program access_token.
    Token,
    /// `POST /cgi-bin/stable_token`: the stable access_token.
    StableToken,
    /// `GET /cgi-bin/ticket/getticket`: jsapi and wx_card tickets.
    GetTicket,
    /// `GET /cgi-bin/getcallbackip`: cheap probe of an access_token.
    CallbackIp,
    /// `POST /cgi-bin/openapi/quota/get`: how much of an API's daily quota is used.
    QuotaGet,
    /// `GET /cgi-bin/gettoken`: WeCom access_token.
    CorpToken,
    /// `GET /cgi-bin/get_jsapi_ticket`: WeCom corp jsapi ticket.
    CorpTicket,
    /// `GET /cgi-bin/ticket/get`: WeCom agent_config ticket.
    AgentTicket,
    /// `GET /cgi-bin/menu/get`: an ordinary API (the custom menu).
    MenuGet,
    /// `POST /cgi-bin/message/custom/send`: customer-service message.
    CustomSend,
    /// `POST /cgi-bin/media/upload?type=T`: a multipart file upload.
    MediaUpload,
    /// `GET /cgi-bin/media/get?media_id=M`: the uploaded file's bytes.
    MediaGet,
    /// `POST /wxa/getwxacodeunlimit`: a Mini Program code image.
    WxaCode,
    /// `POST /cgi-bin/component/api_start_push_ticket`: push a verify ticket now.
    StartPushTicket,
    /// `POST /cgi-bin/component/api_component_token`: the component_access_token.
    ComponentToken,
    /// `POST /cgi-bin/component/api_create_preauthcode`: a pre_auth_code for the
    /// merchant's authorisation page.
    PreAuthCode,
    /// `POST /cgi-bin/component/api_query_auth`: an authorization code to the
    /// authorizer's first token and its refresh token.
    QueryAuth,
    /// `POST /cgi-bin/component/api_authorizer_token`: an authorizer's access token.
    AuthorizerToken,
    /// `POST /cgi-bin/component/api_get_authorizer_list`: every authorizer, by page.
    AuthorizerList,
}

impl Endpoint {
    /// Every endpoint, in the order stats list them.
    pub const ALL: [Endpoint; 19] = [
        Endpoint::Token,
        Endpoint::StableToken,
        Endpoint::GetTicket,
        Endpoint::CallbackIp,
        Endpoint::QuotaGet,
        Endpoint::CorpToken,
        Endpoint::CorpTicket,
        Endpoint::AgentTicket,
        Endpoint::MenuGet,
        Endpoint::CustomSend,
        Endpoint::MediaUpload,
        Endpoint::MediaGet,
        Endpoint::WxaCode,
        Endpoint::StartPushTicket,
        Endpoint::ComponentToken,
        Endpoint::PreAuthCode,
        Endpoint::QueryAuth,
        Endpoint::AuthorizerToken,
        Endpoint::AuthorizerList,
    ];

    /// The URL path WeChat serves it on.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Token => "/cgi-bin/token",
            Endpoint::StableToken => "/cgi-bin/stable_token",
            Endpoint::GetTicket => "/cgi-bin/ticket/getticket",
            Endpoint::CallbackIp => "/cgi-bin/getcallbackip",
            Endpoint::QuotaGet => "/cgi-bin/openapi/quota/get",
            Endpoint::CorpToken => "/cgi-bin/gettoken",
            Endpoint::CorpTicket => "/cgi-bin/get_jsapi_ticket",
            Endpoint::AgentTicket => "/cgi-bin/ticket/get",
            Endpoint::MenuGet => "/cgi-bin/menu/get",
            Endpoint::CustomSend => "/cgi-bin/message/custom/send",
            Endpoint::MediaUpload => "/cgi-bin/media/upload",
            Endpoint::MediaGet => "/cgi-bin/media/get",
            Endpoint::WxaCode => "/wxa/getwxacodeunlimit",
            Endpoint::StartPushTicket => "/cgi-bin/component/api_start_push_ticket",
            Endpoint::ComponentToken => "/cgi-bin/component/api_component_token",
            Endpoint::PreAuthCode => "/cgi-bin/component/api_create_preauthcode",
            Endpoint::QueryAuth => "/cgi-bin/component/api_query_auth",
            Endpoint::AuthorizerToken => "/cgi-bin/component/api_authorizer_token",
            Endpoint::AuthorizerList => "/cgi-bin/component/api_get_authorizer_list",
        }
    }

    /// An ordinary API (not a token or ticket endpoint): served by `apis`.
    pub fn is_api(self) -> bool {
        matches!(
            self,
            Endpoint::MenuGet
                | Endpoint::CustomSend
                | Endpoint::MediaUpload
                | Endpoint::MediaGet
                | Endpoint::WxaCode
        )
    }

    /// An Open Platform (第三方平台) endpoint: served by `component`.
    pub fn is_component(self) -> bool {
        matches!(
            self,
            Endpoint::StartPushTicket
                | Endpoint::ComponentToken
                | Endpoint::PreAuthCode
                | Endpoint::QueryAuth
                | Endpoint::AuthorizerToken
                | Endpoint::AuthorizerList
        )
    }

    /// The endpoint served on `path`, if any.
    pub fn from_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.path() == path)
    }

    /// Does it issue tokens or tickets (as opposed to probing or reporting)? These are the
    /// calls `/sim/stats` counts in `in_flight` and `max_in_flight`.
    pub fn issues_credentials(self) -> bool {
        !matches!(
            self,
            Endpoint::CallbackIp
                | Endpoint::QuotaGet
                | Endpoint::StartPushTicket
                | Endpoint::PreAuthCode
                | Endpoint::AuthorizerList
        )
    }

    /// The HTTP method WeChat documents for it; others get a JSON 405.
    pub fn method(self) -> MethodFilter {
        match self {
            Endpoint::StableToken
            | Endpoint::QuotaGet
            | Endpoint::CustomSend
            | Endpoint::MediaUpload
            | Endpoint::WxaCode => MethodFilter::POST,
            e if e.is_component() => MethodFilter::POST,
            _ => MethodFilter::GET,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_maps_back_to_its_endpoint() {
        for e in Endpoint::ALL {
            assert_eq!(Endpoint::from_path(e.path()), Some(e));
        }
        assert_eq!(Endpoint::from_path("/cgi-bin/nope"), None);
    }
}
