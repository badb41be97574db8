//! The response future of [`Proxy`](super::Proxy).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Response;
use hyper_util::client::legacy::ResponseFuture as ClientFuture;
use tokio::time::Sleep;

use super::{Prepared, ProxyConfig, ViaValues, classify, finish_response, spawn_tunnel};
use crate::BoxError;
use crate::body::ProxyBody;
use crate::error::ProxyError;

pin_project_lite::pin_project! {
    /// Waits for the backend's response head, within the response timeout.
    #[derive(Debug)]
    pub struct ResponseFuture {
        #[pin]
        state: State,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State {
        Waiting {
            #[pin]
            send: ClientFuture,
            #[pin]
            sleep: Sleep,
            prepared: Option<Prepared>,
            config: Arc<ProxyConfig>,
            via: Option<Arc<ViaValues>>,
        },
        Failed { error: Option<ProxyError> },
    }
}

impl ResponseFuture {
    pub(crate) fn new(
        send: ClientFuture,
        timeout: std::time::Duration,
        prepared: Prepared,
        config: Arc<ProxyConfig>,
        via: Option<Arc<ViaValues>>,
    ) -> Self {
        ResponseFuture {
            state: State::Waiting {
                send,
                sleep: tokio::time::sleep(timeout),
                prepared: Some(prepared),
                config,
                via,
            },
        }
    }

    pub(crate) fn failed(error: ProxyError) -> Self {
        ResponseFuture {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<ProxyBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Failed { error } => {
                let e = error.take().unwrap_or(ProxyError::NoTarget);
                Poll::Ready(Err(e.into()))
            }
            StateProj::Waiting {
                send,
                sleep,
                prepared,
                config,
                via,
            } => {
                let Some(p) = prepared.as_mut() else {
                    return Poll::Ready(Err(ProxyError::NoTarget.into()));
                };
                if let Poll::Ready(result) = send.poll(cx) {
                    let mut p = prepared.take().ok_or(ProxyError::NoTarget)?;
                    return match result {
                        Ok(mut resp) => {
                            let mut tunnelled = false;
                            if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                                if let Some(client) = p.tunnel.take() {
                                    let backend = hyper::upgrade::on(&mut resp);
                                    spawn_tunnel(client, backend);
                                    tunnelled = true;
                                }
                            }
                            Poll::Ready(Ok(finish_response(
                                resp,
                                &p,
                                tunnelled,
                                config,
                                via.as_deref(),
                            )))
                        }
                        Err(e) => Poll::Ready(Err(classify(e, p.connect_timeout).into())),
                    };
                }
                ready!(sleep.poll(cx));
                Poll::Ready(Err(ProxyError::ResponseTimeout(p.response_timeout).into()))
            }
        }
    }
}
