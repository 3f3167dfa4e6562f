//! The `sluice.v1.Auth` service: access keys and their identity policies.

use crate::access::Access;
use crate::status_of;
use sluice_cluster::Broker;
use sluice_proto::v1 as pb;
use sluice_proto::v1::auth_server::{Auth, AuthServer};
use tonic::{Request, Response, Status};

pub struct AuthApi {
    broker: Broker,
    access: Access,
}

pub fn auth_service(broker: Broker, access: Access) -> crate::WithMethodPath<AuthServer<AuthApi>> {
    crate::WithMethodPath::new(AuthServer::new(AuthApi { broker, access }))
}

#[tonic::async_trait]
impl Auth for AuthApi {
    #[tracing::instrument(name = "grpc.create_access_key", skip_all, fields(user = %request.get_ref().user))]
    async fn create_access_key(
        &self,
        request: Request<pb::CreateAccessKeyRequest>,
    ) -> Result<Response<pb::CreateAccessKeyResponse>, Status> {
        let caller = self.access.check(&request, "sluice:CreateAccessKey", "*")?;
        let request = request.into_inner();
        if request.admin && caller.as_ref().is_some_and(|c| !c.admin) {
            return Err(status_of(sluice_cluster::BrokerError::AccessDenied(
                "Only an admin key can create admin keys.".into(),
            )));
        }
        let key = self
            .broker
            .create_access_key(&request.user, request.admin)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::CreateAccessKeyResponse {
            access_key_id: key.access_key_id,
            secret_access_key: key.secret_access_key,
            user: key.user,
        }))
    }

    #[tracing::instrument(name = "grpc.list_access_keys", skip_all)]
    async fn list_access_keys(
        &self,
        request: Request<pb::ListAccessKeysRequest>,
    ) -> Result<Response<pb::ListAccessKeysResponse>, Status> {
        self.access.check(&request, "sluice:ListAccessKeys", "*")?;
        let keys = self
            .broker
            .list_access_keys()
            .into_iter()
            .map(|key| pb::AccessKeyInfo {
                access_key_id: key.access_key_id,
                user: key.user,
                created_ms: key.created_ms,
                admin: key.admin,
                policies: key.policies,
            })
            .collect();
        Ok(Response::new(pb::ListAccessKeysResponse { keys }))
    }

    #[tracing::instrument(name = "grpc.delete_access_key", skip_all, fields(access_key_id = %request.get_ref().access_key_id))]
    async fn delete_access_key(
        &self,
        request: Request<pb::DeleteAccessKeyRequest>,
    ) -> Result<Response<pb::DeleteAccessKeyResponse>, Status> {
        self.access.check(&request, "sluice:DeleteAccessKey", "*")?;
        self.broker
            .delete_access_key(&request.get_ref().access_key_id)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::DeleteAccessKeyResponse {}))
    }

    #[tracing::instrument(name = "grpc.attach_policy", skip_all, fields(access_key_id = %request.get_ref().access_key_id, policy = %request.get_ref().policy_name))]
    async fn attach_policy(
        &self,
        request: Request<pb::AttachPolicyRequest>,
    ) -> Result<Response<pb::AttachPolicyResponse>, Status> {
        self.access.check(&request, "sluice:AttachPolicy", "*")?;
        let request = request.into_inner();
        self.broker
            .attach_policy(
                &request.access_key_id,
                &request.policy_name,
                &request.document,
            )
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::AttachPolicyResponse {}))
    }

    #[tracing::instrument(name = "grpc.detach_policy", skip_all, fields(access_key_id = %request.get_ref().access_key_id, policy = %request.get_ref().policy_name))]
    async fn detach_policy(
        &self,
        request: Request<pb::DetachPolicyRequest>,
    ) -> Result<Response<pb::DetachPolicyResponse>, Status> {
        self.access.check(&request, "sluice:DetachPolicy", "*")?;
        let request = request.into_inner();
        self.broker
            .detach_policy(&request.access_key_id, &request.policy_name)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::DetachPolicyResponse {}))
    }

    #[tracing::instrument(name = "grpc.get_policy", skip_all, fields(access_key_id = %request.get_ref().access_key_id, policy = %request.get_ref().policy_name))]
    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::GetPolicyResponse>, Status> {
        self.access.check(&request, "sluice:GetPolicy", "*")?;
        let request = request.get_ref();
        let document = self
            .broker
            .key_policy(&request.access_key_id, &request.policy_name)
            .ok_or_else(|| {
                status_of(sluice_cluster::BrokerError::NotFound(format!(
                    "Policy {} is not attached to access key {}.",
                    request.policy_name, request.access_key_id
                )))
            })?;
        Ok(Response::new(pb::GetPolicyResponse { document }))
    }
}
