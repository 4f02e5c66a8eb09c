//! The topic admin calls past create and delete: create with retention,
//! alter (api 11) and describe (api 12).
use super::{Client, ClientError, OwnedResponse, unexpected};
use crate::catalog::{TopicDescription, TopicRetention};
use crate::proto::{Api, Request};

impl Client {
    /// Creates a topic with its own retention (sent as CreateTopic
    /// version 2; a None setting follows the server's default).
    pub fn create_topic_with(&mut self, name: &str, partitions: u32, retention: TopicRetention) -> Result<(), ClientError> {
        match self.call(&Request::CreateTopic { topic: name, partitions, retention: Some(retention), indices: vec![] })? {
            OwnedResponse::CreateTopic => Ok(()),
            other => Err(unexpected(Api::CreateTopic, &other)),
        }
    }

    /// Creates a topic with named indices (CreateTopic version 3), in the
    /// order given; every record then carries one value per index.
    pub fn create_topic_indexed(
        &mut self,
        name: &str,
        partitions: u32,
        retention: TopicRetention,
        indices: &[String],
    ) -> Result<(), ClientError> {
        let indices: Vec<&str> = indices.iter().map(String::as_str).collect();
        match self.call(&Request::CreateTopic { topic: name, partitions, retention: Some(retention), indices })? {
            OwnedResponse::CreateTopic => Ok(()),
            other => Err(unexpected(Api::CreateTopic, &other)),
        }
    }

    /// Changes a topic's retention (None leaves a setting as it is;
    /// `Some(None)` returns it to the server's default) and returns the
    /// topic's settings after.
    pub fn alter_topic(&mut self, name: &str, ms: Option<Option<u64>>, bytes: Option<Option<u64>>) -> Result<TopicRetention, ClientError> {
        match self.call(&Request::AlterTopic { topic: name, ms, bytes })? {
            OwnedResponse::AlterTopic(r) => Ok(r),
            other => Err(unexpected(Api::AlterTopic, &other)),
        }
    }

    /// A topic's settings, and each partition's offsets, bytes and core.
    pub fn describe_topic(&mut self, name: &str) -> Result<TopicDescription, ClientError> {
        match self.call(&Request::DescribeTopic { topic: name })? {
            OwnedResponse::DescribeTopic(d) => Ok(d),
            other => Err(unexpected(Api::DescribeTopic, &other)),
        }
    }
}
