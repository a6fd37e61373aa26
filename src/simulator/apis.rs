//! A few of WeChat's ordinary APIs, the kind business code calls through the gateway:
//! each needs a valid access token and answers 40001 for a replaced token, 42001 for an
//! expired one and 40014 for one never issued, as WeChat does. Media are kept in memory
//! (the simulator is a test tool) and given back byte for byte.

use axum::body::Bytes;
use serde_json::{Value, json};

use super::endpoint::Endpoint;
use super::state::{Kind, State};
use super::wechat::{BAD_ARGS, BAD_DATA, Request, WxError};

/// A reply of an ordinary API: JSON, or a file.
pub enum ApiReply {
    Json(Value),
    File { content_type: String, body: Bytes },
}

const NO_MEDIA: WxError = WxError {
    code: 40007,
    msg: "invalid media_id",
};
const NO_FILE: WxError = WxError {
    code: 41005,
    msg: "media data missing",
};
const BAD_TYPE: WxError = WxError {
    code: 40004,
    msg: "invalid media type",
};

/// One uploaded file part: its content type and bytes.
struct Part {
    content_type: String,
    data: Bytes,
}

/// The `media` part of a `multipart/form-data` body (RFC 7578), as WeChat reads it.
fn media_part(content_type: Option<&str>, body: &Bytes) -> Option<Part> {
    let boundary = content_type?
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))?
        .trim_matches('"');
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut at = find(body, delimiter, 0)?;
    loop {
        let start = at + delimiter.len();
        if body.get(start..start + 2) == Some(b"--") {
            return None; // the closing delimiter: no media part
        }
        let head_start = start + 2; // CRLF after the delimiter
        let head_end = find(body, b"\r\n\r\n", head_start)?;
        let head = std::str::from_utf8(body.get(head_start..head_end)?).ok()?;
        let data_start = head_end + 4;
        let next = find(body, delimiter, data_start)?;
        let data_end = next.checked_sub(2)?; // CRLF before the delimiter
        let mut name = None;
        let mut part_type = "application/octet-stream".to_owned();
        for line in head.split("\r\n") {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("content-disposition:") {
                name = line
                    .split(';')
                    .map(str::trim)
                    .find_map(|p| p.strip_prefix("name="))
                    .map(|n| n.trim_matches('"').to_owned());
            } else if let Some(t) = lower.strip_prefix("content-type:") {
                part_type = t.trim().to_owned();
            }
        }
        if name.as_deref() == Some("media") {
            return Some(Part {
                content_type: part_type,
                data: body.slice(data_start..data_end),
            });
        }
        at = next;
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w[0] == needle[0] && w == needle)
        .map(|p| p + from)
}

impl State {
    /// Serves one (unfaulted) call of an ordinary API.
    pub fn serve_api(
        &mut self,
        endpoint: Endpoint,
        req: &Request,
        content_type: Option<&str>,
        body: &Bytes,
    ) -> Result<ApiReply, WxError> {
        let owner = self.valid_token(
            req,
            &[
                Kind::Token,
                Kind::StableToken,
                Kind::CorpToken,
                Kind::AuthorizerToken,
            ],
        )?;
        self.spend(&owner, endpoint)?;
        match endpoint {
            Endpoint::MenuGet => Ok(ApiReply::Json(json!({
                "menu": {"button": [
                    {"type": "click", "name": "今日歌曲", "key": "V1001_TODAY_MUSIC"},
                    {"type": "view", "name": "搜索", "url": "https://www.soso.com/"},
                ]}
            }))),
            Endpoint::CustomSend => {
                let json = req.json.as_ref().ok_or(BAD_DATA)?;
                let touser = json.get("touser").and_then(Value::as_str);
                let msgtype = json.get("msgtype").and_then(Value::as_str);
                if touser.is_none_or(str::is_empty) || msgtype.is_none_or(str::is_empty) {
                    return Err(BAD_DATA);
                }
                Ok(ApiReply::Json(json!({"errcode": 0, "errmsg": "ok"})))
            }
            Endpoint::MediaUpload => {
                let kind = req.param("type").ok_or(BAD_TYPE)?.to_owned();
                if !["image", "voice", "video", "thumb", "file"].contains(&kind.as_str()) {
                    return Err(BAD_TYPE);
                }
                let part = media_part(content_type, body).ok_or(NO_FILE)?;
                let media_id = format!("MEDIA_{}_{}", self.media.len() + 1, part.data.len());
                self.media
                    .insert(media_id.clone(), (part.content_type, part.data));
                let created_at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                Ok(ApiReply::Json(
                    json!({"type": kind, "media_id": media_id, "created_at": created_at}),
                ))
            }
            Endpoint::MediaGet => {
                let id = req.param("media_id").ok_or(NO_MEDIA)?;
                let (content_type, body) = self.media.get(id).ok_or(NO_MEDIA)?.clone();
                Ok(ApiReply::File { content_type, body })
            }
            Endpoint::WxaCode => {
                let json = req.json.as_ref().ok_or(BAD_DATA)?;
                let scene = json.get("scene").and_then(Value::as_str).ok_or(BAD_ARGS)?;
                // A tiny PNG-looking image that carries the scene, so tests can check it.
                let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
                png.extend_from_slice(scene.as_bytes());
                Ok(ApiReply::File {
                    content_type: "image/png".to_owned(),
                    body: Bytes::from(png),
                })
            }
            _ => Err(BAD_ARGS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_media_part_of_a_multipart_body_is_found() {
        let body = Bytes::from_static(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--XyZ\r\nContent-Disposition: form-data; name=\"media\"; filename=\"a.bin\"\r\nContent-Type: image/jpeg\r\n\r\n\x00\x01\r\n\x02\r\n--XyZ--\r\n",
        );
        let part = media_part(Some("multipart/form-data; boundary=XyZ"), &body).unwrap();
        assert_eq!(part.content_type, "image/jpeg");
        assert_eq!(&part.data[..], b"\x00\x01\r\n\x02");
        assert!(media_part(Some("multipart/form-data; boundary=nope"), &body).is_none());
        assert!(media_part(None, &body).is_none());
    }
}
