//! The rules of WeChat's `/cgi-bin/component/*` endpoints, as pure functions of the state
//! and the request (like `wechat.rs`): parameters, credentials, quota, then the work.

use serde_json::{Value, json};

use super::component::{
    BAD_REFRESH, CODE_EXPIRED, CODE_INVALID, LIST_MAX, NOT_AUTHORIZED, NOT_OWNER, PRE_AUTH_LIFE,
    TICKET_INVALID, authorizer_owner, code,
};
use super::endpoint::Endpoint;
use super::state::{Kind, Lookup, Owner, Replace, State};
use super::wechat::{
    BAD_APPID, BAD_ARGS, BAD_DATA, BAD_SECRET, BAD_TOKEN, EXPIRED, NO_APPID, NO_SECRET, NO_TOKEN,
    NOT_LATEST, Request, WxError,
};

/// A JSON number field of the body (`offset`, `count`); a string or a negative is a
/// format error.
fn number(req: &Request, name: &str) -> Result<Option<u64>, WxError> {
    match req.json.as_ref().ok_or(BAD_DATA)?.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or(BAD_DATA),
    }
}

impl State {
    /// The component a call names in `component_appid`: its index.
    fn named_component(&self, req: &Request) -> Result<usize, WxError> {
        let appid = req.field("component_appid")?.ok_or(NO_APPID)?;
        self.components.index(appid).ok_or(BAD_APPID)
    }

    /// The component whose valid `component_access_token` the call carries; it must be
    /// the one named in the body.
    fn component_by_token(&self, req: &Request) -> Result<usize, WxError> {
        let token = req.param("component_access_token").ok_or(NO_TOKEN)?;
        let owner = match self.lookup(token, true) {
            Lookup::Valid(c, _) if c.kind == Kind::ComponentToken => c.owner.id.clone(),
            Lookup::Expired(c) if c.kind == Kind::ComponentToken => return Err(EXPIRED),
            Lookup::Replaced(c) if c.kind == Kind::ComponentToken => return Err(NOT_LATEST),
            _ => return Err(BAD_TOKEN),
        };
        let named = self.named_component(req)?;
        if self.components.index(&owner) != Some(named) {
            return Err(NOT_OWNER);
        }
        Ok(named)
    }

    fn component_owner(&self, index: usize) -> Owner {
        Owner {
            id: self.components.list[index].account.appid.clone(),
            secret: 0,
        }
    }

    /// The component a call is about, for per-app stats.
    pub fn component_of(&self, req: &Request) -> Option<String> {
        let appid = req.field("component_appid").ok().flatten()?;
        self.components.index(appid).map(|_| appid.to_owned())
    }

    /// Serves one (unfaulted) call of an Open Platform endpoint.
    pub fn serve_component(&mut self, endpoint: Endpoint, req: &Request) -> Result<Value, WxError> {
        match endpoint {
            Endpoint::StartPushTicket => self.start_push_ticket(req),
            Endpoint::ComponentToken => self.component_token(req),
            Endpoint::PreAuthCode => self.pre_auth_code(req),
            Endpoint::QueryAuth => self.query_auth(req),
            Endpoint::AuthorizerToken => self.authorizer_token(req),
            Endpoint::AuthorizerList => self.authorizer_list(req),
            _ => Err(BAD_ARGS),
        }
    }

    fn check_secret(&self, index: usize, secret: Option<&str>) -> Result<(), WxError> {
        let secret = secret.ok_or(NO_SECRET)?;
        if self.components.list[index].account.secret != secret {
            return Err(BAD_SECRET);
        }
        Ok(())
    }

    fn start_push_ticket(&mut self, req: &Request) -> Result<Value, WxError> {
        let index = self.named_component(req)?;
        self.check_secret(index, req.field("component_secret")?)?;
        let owner = self.component_owner(index);
        self.spend(&owner, Endpoint::StartPushTicket)?;
        self.components.push_requests.push(owner.id);
        Ok(json!({"errcode": 0, "errmsg": "ok"}))
    }

    fn component_token(&mut self, req: &Request) -> Result<Value, WxError> {
        let index = self.named_component(req)?;
        self.check_secret(index, req.field("component_appsecret")?)?;
        let ticket = req
            .field("component_verify_ticket")?
            .ok_or(TICKET_INVALID)?;
        let now_unix = self.clock.unix_secs();
        self.components.list[index].check_ticket(ticket, now_unix)?;
        let owner = self.component_owner(index);
        self.spend(&owner, Endpoint::ComponentToken)?;
        let (token, life) = self.issue(
            Endpoint::ComponentToken,
            owner,
            Kind::ComponentToken,
            Replace::AfterGrace,
        );
        Ok(json!({"component_access_token": token, "expires_in": life.as_secs()}))
    }

    fn pre_auth_code(&mut self, req: &Request) -> Result<Value, WxError> {
        let index = self.component_by_token(req)?;
        let owner = self.component_owner(index);
        self.spend(&owner, Endpoint::PreAuthCode)?;
        let now = self.clock.now();
        let component = &mut self.components.list[index];
        component.pre_auth_codes.retain(|_, &mut at| at > now);
        let pre_auth = code("preauthcode@@@");
        component
            .pre_auth_codes
            .insert(pre_auth.clone(), now + PRE_AUTH_LIFE);
        component.last_pre_auth = Some(pre_auth.clone());
        Ok(json!({"pre_auth_code": pre_auth, "expires_in": PRE_AUTH_LIFE.as_secs()}))
    }

    fn query_auth(&mut self, req: &Request) -> Result<Value, WxError> {
        let index = self.component_by_token(req)?;
        let given = req.field("authorization_code")?.ok_or(CODE_INVALID)?;
        let now = self.clock.now();
        let component = &self.components.list[index];
        let code = component.auth_codes.get(given).ok_or(CODE_INVALID)?;
        if now >= code.expires_at {
            return Err(CODE_EXPIRED);
        }
        let authorizer = code.authorizer.clone();
        let refresh = component
            .authorizers
            .get(&authorizer)
            .ok_or(NOT_AUTHORIZED)?
            .refresh_token
            .clone();
        let owner = self.component_owner(index);
        self.spend(&owner, Endpoint::QueryAuth)?;
        // Single use: gone once it has been exchanged.
        self.components.list[index].auth_codes.remove(given);
        let (token, life) = self.issue(
            Endpoint::QueryAuth,
            authorizer_owner(&authorizer, index),
            Kind::AuthorizerToken,
            Replace::AfterGrace,
        );
        Ok(json!({"authorization_info": {
            "authorizer_appid": authorizer,
            "authorizer_access_token": token,
            "expires_in": life.as_secs(),
            "authorizer_refresh_token": refresh,
            "func_info": [{"funcscope_category": {"id": 1}}],
        }}))
    }

    fn authorizer_token(&mut self, req: &Request) -> Result<Value, WxError> {
        let index = self.component_by_token(req)?;
        let authorizer = req.field("authorizer_appid")?.ok_or(NO_APPID)?.to_owned();
        let given = req.field("authorizer_refresh_token")?.ok_or(BAD_REFRESH)?;
        let record = self.components.list[index]
            .authorizers
            .get(&authorizer)
            .ok_or(NOT_AUTHORIZED)?;
        if record.refresh_token != given {
            return Err(BAD_REFRESH);
        }
        let owner = self.component_owner(index);
        self.spend(&owner, Endpoint::AuthorizerToken)?;
        let every = u64::from(self.components.rotate_every);
        let refresh = {
            let record = self.components.list[index]
                .authorizers
                .get_mut(&authorizer)
                .ok_or(NOT_AUTHORIZED)?;
            record.token_calls += 1;
            if record.rotate_next || (every > 0 && record.token_calls % every == 0) {
                // The old refresh token is refused from this call on: what a server
                // that loses the reply, or stores late, has to survive.
                record.refresh_token = code("refreshtoken@@@");
                record.rotate_next = false;
            }
            record.refresh_token.clone()
        };
        let (token, life) = self.issue(
            Endpoint::AuthorizerToken,
            authorizer_owner(&authorizer, index),
            Kind::AuthorizerToken,
            Replace::AfterGrace,
        );
        Ok(json!({
            "authorizer_access_token": token,
            "expires_in": life.as_secs(),
            "authorizer_refresh_token": refresh,
        }))
    }

    fn authorizer_list(&mut self, req: &Request) -> Result<Value, WxError> {
        let index = self.component_by_token(req)?;
        let offset = number(req, "offset")?.unwrap_or(0);
        let count = number(req, "count")?.ok_or(BAD_ARGS)?;
        if !(1..=LIST_MAX).contains(&count) {
            return Err(BAD_ARGS);
        }
        let owner = self.component_owner(index);
        self.spend(&owner, Endpoint::AuthorizerList)?;
        let authorizers = &self.components.list[index].authorizers;
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        let take = usize::try_from(count).unwrap_or(usize::MAX);
        let list: Vec<Value> = authorizers
            .iter()
            .skip(skip)
            .take(take)
            .map(|(appid, a)| {
                json!({"authorizer_appid": appid, "refresh_token": a.refresh_token, "auth_time": a.auth_time})
            })
            .collect();
        Ok(json!({"total_count": authorizers.len(), "list": list}))
    }
}
